"""Fast byte I/O for the tunnel hot path.

Trio's :class:`~trio.SocketStream` yields to the scheduler on every
``send``/``recv`` (a ``cancel_shielded_checkpoint`` after each successful
operation) and checks a conflict detector; for a tunnel moving small
messages that is most of the cost of a round trip.  :class:`FdPipe` talks
to the socket's file descriptor directly: it tries the non-blocking
operation first and only waits (``trio.lowlevel.wait_readable`` /
``wait_writable``) when the kernel says it would block.  So that a busy
connection cannot starve the others, it checkpoints every
:data:`CHECKPOINT_EVERY` operations that did not wait.

:func:`pipe_for` picks :class:`FdPipe` for a plain :class:`trio.SocketStream`
and :class:`StreamPipe` (the ordinary Stream API) for anything else: TLS,
HTTP/2 streams, memory streams in tests.

The caller must be the stream's only user while it uses the pipe, and must
stop using it before the stream is closed.

Progress: :attr:`Pipe.progress` is when a write last made progress (Trio
time), so that the timers can tell a peer that reads slowly (a write that
still makes progress, which is activity) from one that does not read at
all.  :class:`FdPipe` updates it only when a write had to wait (the fast
path costs nothing); :class:`StreamPipe` writes large data in pieces and
updates it after each.
"""

from __future__ import annotations

import math
import os
import socket
import struct
from typing import final

import trio

from wstrio._io.streams.budget import READ_SIZE, UNLIMITED, BufferBudget

__all__ = [
    "BROKEN",
    "CHECKPOINT_EVERY",
    "READ_SIZE",
    "FdPipe",
    "Pipe",
    "StreamPipe",
    "close_stream",
    "pipe_for",
    "reset_on_close",
]

# READ_SIZE (65536): bytes asked for per read, on every stream wstrio reads,
# unless the server is at its buffer budget (wstrio._io.streams.budget).
BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
"""What a stream raises when its peer is gone or it was closed under us."""
CHECKPOINT_EVERY = 16
STREAM_WRITE_PIECE = 16384
"""Bytes per piece when :class:`StreamPipe` writes large data (so each piece can count as progress)."""


class Pipe:
    """Receive and send bytes on one stream."""

    stream: trio.abc.Stream
    budget: BufferBudget = UNLIMITED
    """Where the bytes of a write that has to wait are counted, and what reads ask for."""
    progress: float = -math.inf
    """When a write last made progress (see the module docstring); ``-inf``: none had to wait yet."""
    unsent: bytes | None = None
    """What a cancelled :meth:`send_all` left unwritten, when known (:class:`FdPipe`): the
    stream is still whole and the caller may send it later.  ``None``: unknown (the stream
    must be taken as broken).  The caller resets it to ``None`` once read."""

    async def receive(self) -> bytes | bytearray:
        """Up to 64 KiB; ``b""`` at EOF.  Raises OSError/trio errors when broken."""
        raise NotImplementedError

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send everything (partially sent data is lost if cancelled)."""
        raise NotImplementedError

    async def send_eof(self) -> None:
        """Half-close, when the stream supports it."""
        if isinstance(self.stream, trio.abc.HalfCloseableStream):
            await self.stream.send_eof()


@final
class StreamPipe(Pipe):
    """The generic path: the stream's own ``receive_some``/``send_all``."""

    def __init__(self, stream: trio.abc.Stream, budget: BufferBudget = UNLIMITED) -> None:
        self.stream = stream
        self.budget = budget

    async def receive(self) -> bytes | bytearray:
        return await self.stream.receive_some(self.budget.read_size)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if len(data) <= STREAM_WRITE_PIECE:
            await self.stream.send_all(data)
        else:
            # No telling whether a Stream write waits: count large ones as held.
            budget = self.budget
            total = len(data)
            budget.hold(total)
            try:
                view = memoryview(data)
                for start in range(0, len(view), STREAM_WRITE_PIECE):
                    await self.stream.send_all(view[start : start + STREAM_WRITE_PIECE])
                    self.progress = trio.current_time()
            finally:
                budget.release(total)
        self.progress = trio.current_time()


@final
class FdPipe(Pipe):
    """The fast path for a plain socket (see the module docstring)."""

    def __init__(self, stream: trio.SocketStream, budget: BufferBudget = UNLIMITED) -> None:
        self.stream = self._socket_stream = stream
        self.budget = budget
        self.fd = stream.socket.fileno()
        self._unyielded = 0
        # Whether the last read found data waiting.  Request/response traffic
        # alternates (the next read would fail with EAGAIN, a wasted system
        # call), streaming traffic does not: guess from the last read.
        self._data_was_waiting = False

    async def _maybe_checkpoint(self) -> None:
        self._unyielded += 1
        if self._unyielded >= CHECKPOINT_EVERY:
            self._unyielded = 0
            await trio.lowlevel.checkpoint()

    async def receive(self) -> bytes:
        fd = self.fd
        if self._data_was_waiting:
            try:
                data = os.read(fd, self.budget.read_size)
            except BlockingIOError:
                self._data_was_waiting = False
            else:
                await self._maybe_checkpoint()
                return data
        self._unyielded = 0
        while True:
            await trio.lowlevel.wait_readable(fd)
            size = self.budget.read_size
            try:
                data = os.read(fd, size)
            except BlockingIOError:
                continue
            # A full read means more is probably waiting.
            self._data_was_waiting = len(data) == size
            return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        fd = self.fd
        total = len(data)
        sent = 0
        try:
            try:
                sent = os.write(fd, data)
            except BlockingIOError:
                pass
            if sent == total:
                await self._maybe_checkpoint()
                return
            view = memoryview(data)
            self._unyielded = 0
            if sent:
                self.progress = trio.current_time()
            # The peer does not take it yet: these bytes are held until it does.
            budget = self.budget
            budget.hold(total)
            try:
                while sent < total:
                    await trio.lowlevel.wait_writable(fd)
                    try:
                        sent += os.write(fd, view[sent:])
                    except BlockingIOError:
                        continue
                    self.progress = trio.current_time()
            finally:
                budget.release(total)
        except trio.Cancelled:
            # Cancelled between two writes: the socket is whole, and exactly
            # this much is still to go (a partial WebSocket frame, say).
            self.unsent = bytes(memoryview(data)[sent:])
            raise

    async def send_eof(self) -> None:
        # A half-close never blocks: shut the write side down directly, with
        # the same checkpoint rule as a write (SocketStream.send_eof yields
        # every time; that was one more task switch per tunnel's end).
        try:
            self._socket_stream.socket.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise trio.BrokenResourceError from exc  # as SocketStream.send_eof does
        await self._maybe_checkpoint()


def pipe_for(stream: trio.abc.Stream, budget: BufferBudget = UNLIMITED) -> Pipe:
    """The fastest :class:`Pipe` that is correct for ``stream``, counting against ``budget``."""
    if type(stream) is trio.SocketStream:
        return FdPipe(stream, budget)
    return StreamPipe(stream, budget)


async def close_stream(stream: trio.abc.Stream) -> None:
    """Close ``stream`` at once, even when cancelled (like :func:`trio.aclose_forcefully`).

    A plain socket is closed synchronously: ``aclose_forcefully`` would open
    a cancelled scope and raise and catch :class:`trio.Cancelled` for the
    sake of a checkpoint, which was a sixth of the cost of a short-lived
    WebSocket.
    """
    if type(stream) is trio.SocketStream:
        stream.socket.close()
    else:
        await trio.aclose_forcefully(stream)


def reset_on_close(stream: trio.abc.Stream) -> bool:
    """Make the close of ``stream``'s TCP socket a reset (``SO_LINGER`` 0); False if it has none.

    For when the other end must not mistake the end for a clean one: a
    relay whose backend broke (the client would otherwise see EOF, as if
    the stream had ended whole).  Works on a plain socket and on TLS over
    one (the TLS stream cannot say goodbye then; that is the point).
    """
    inner: object = stream
    if isinstance(inner, trio.SSLStream):
        inner = inner.transport_stream
    if not isinstance(inner, trio.SocketStream):
        return False
    try:
        inner.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        return False
    return True
