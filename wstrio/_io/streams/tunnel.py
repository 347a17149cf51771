"""The wstunnel tunnel: one WebSocket client, one backend byte stream.

Theory of operation
-------------------
:func:`run_tunnel` runs one nursery with sibling tasks (the first one in
the nursery's own body, which saves a task per tunnel):

* ``client -> backend``: read client bytes, feed the codec, write data
  payloads to the backend, answer PINGs, note PONGs;
* ``backend -> client``: read backend bytes, frame them (text or binary),
  send them;
* ``ping`` (only with ``ping-interval``): PING every interval and wait at
  most ``pong-timeout`` for the PONG.

The first task to reach an ending records an :class:`Outcome` (the close
code to send, and why) and cancels its siblings.  Exceptions never escape the
tasks: each failure is mapped to its outcome where it happens (client gone:
no close frame; backend error: 1011; protocol error: wsproto's code).  Then,
outside the nursery, the close frame goes out and wstrio waits (bounded) for
the client's CLOSE, as RFC 6455 asks.

Endings and their close codes (lighttpd's, reference section 2.10):

==============================  ===========================================
client CLOSE (any code)         data before it is delivered, the backend is
                                half-closed (EOF), reply **1000**
client protocol error           **1002** (1007 for invalid UTF-8 text)
client TCP EOF, no CLOSE        backend half-closed; the tunnel lives on
                                until the backend closes (then **1001**)
backend EOF                     data first, then **1001**
backend error or timeout        **1011**
client silent ``max-read-idle`` **1001**, actually delivered
no PONG within ``pong-timeout``  **1011**
server shutdown (cancelled)     **1001**
==============================  ===========================================

Backpressure: each direction reads only after its last write finished, so a
slow reader on either side stops reads from the other (memory per tunnel is
bounded by the 64 KiB read size and the kernel's socket buffers).

Timers: ``max-read-idle``, ``max-write-idle`` and the backend's
``read-timeout``/``write-timeout`` are checked from timestamps the pumps
update, instead of a cancel scope around every read and write (which cost
about a tenth of a small message's round trip).  In a server, one
:class:`TimerService` task checks every tunnel once a second (lighttpd's
trigger); standalone, a ``watchdog`` sibling does it to the deadline.

Plain sockets are read and written through :mod:`wstrio._io.streams.pipes`'s file
descriptor fast path; TLS, HTTP/2 and memory streams through their own
Stream API.

The hub (:mod:`wstrio._io.streams.fastpath.hub`): a tunnel between two plain sockets, without
pings, first lives in the server's hub, which moves its data synchronously
from one epoll set shared by all such tunnels (no task switch per message).
At the first control frame, EOF, error or write that would block, the hub
hands the tunnel back, with what was pending (bytes not yet written, events
not yet handled), and the tasks below take over for the rest of its life.

One writer: every write to the client goes through :class:`ClientSender`,
whose lock keeps frames whole.  A write that was cancelled or failed midway
marks the stream broken, and nothing more is written to it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from typing import final

import attrs
import trio
from wsproto.frame_protocol import CloseReason

from wstrio._io.streams.fastpath.hub import Hub
from wstrio._io.streams.pipes import BROKEN, READ_SIZE, FdPipe, Pipe, pipe_for
from wstrio._sansio.websocket.codec import Close, Data, Ping, Pong, TextFramer, WebSocketCodec

__all__ = ["READ_SIZE", "ClientSender", "Outcome", "TimerService", "TunnelSettings", "run_tunnel"]

log = logging.getLogger("wstrio.tunnel")


@final
@attrs.frozen
class TunnelSettings:
    """Timers of one tunnel (seconds; 0 disables the optional ones)."""

    max_read_idle: float = 60.0
    max_write_idle: float = 360.0
    ping_interval: float = 0.0
    pong_timeout: float = 0.0
    backend_read_timeout: float = 0.0
    backend_write_timeout: float = 0.0
    close_timeout: float = 5.0
    shutdown_timeout: float = 30.0


@final
@attrs.frozen
class Outcome:
    """How a tunnel ended.

    ``code`` is the close code sent to the client, or ``None`` when no close
    frame could be sent (the client vanished or stopped reading).
    """

    code: int | None
    reason: str
    by: str
    """``client``, ``backend``, ``protocol``, ``idle``, ``ping`` or ``shutdown``."""


@final
class ClientSender:
    """The one write path to the client.

    The lock keeps frames whole when the ping task and the data task both
    write.  It is taken without a checkpoint when free (the write itself
    is one), which matters on the hot path.
    """

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe
        self.lock = trio.Lock()
        self.broken = False
        self.bytes_sent = 0
        self.write_started: float | None = None

    async def send(self, data: bytes) -> bool:
        """Send ``data`` whole; False if the client is gone."""
        if self.broken:
            return False
        try:
            self.lock.acquire_nowait()
        except trio.WouldBlock:
            await self.lock.acquire()
        ok = False
        try:
            self.write_started = trio.current_time()
            await self.pipe.send_all(data)
            ok = True
        except BROKEN:
            pass
        finally:
            self.write_started = None
            self.lock.release()
            # Cancelled or failed midway: a partial frame may be on the
            # wire, so nothing else may follow it.
            if not ok:
                self.broken = True
        self.bytes_sent += len(data)
        return ok


@final
class TimerService:
    """Checks every registered tunnel's timers once a second.

    This is lighttpd's once-a-second trigger: one task per server instead of
    a timer task per tunnel, which costs a task spawn (and its memory) per
    connection.  Timeouts fire up to one second late, as in lighttpd.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._tunnels: set[_Tunnel] = set()

    def add(self, tunnel: _Tunnel) -> None:
        self._tunnels.add(tunnel)

    def discard(self, tunnel: _Tunnel) -> None:
        self._tunnels.discard(tunnel)

    async def run(self) -> None:
        """Check the timers forever (run it in the server's nursery)."""
        while True:
            await trio.sleep(self.interval)
            now = trio.current_time()
            for tunnel in list(self._tunnels):
                if tunnel.check_timers(now) is None:
                    self._tunnels.discard(tunnel)


@final
class _Tunnel:
    def __init__(
        self,
        client: trio.abc.Stream,
        backend: trio.abc.Stream,
        codec: WebSocketCodec,
        settings: TunnelSettings,
    ) -> None:
        self.client = pipe_for(client)
        self.backend = pipe_for(backend)
        self.codec = codec
        self.settings = settings
        self.sender = ClientSender(self.client)
        self.outcome: Outcome | None = None
        self.scope: trio.CancelScope | None = None
        self.pong: trio.Event | None = None  # created by the pinger
        self.bytes_to_backend = 0
        self.client_eof = False
        now = trio.current_time()
        # Timestamps read by the watchdog (one timer per tunnel instead of a
        # cancel scope around every read and write).
        self.last_client_read = now
        self.last_backend_read = now
        self.backend_write_started: float | None = None
        self.framer = None if codec.binary else TextFramer()
        # What the hub leaves for the tasks when it hands the tunnel back.
        self.pending_to_backend = b""
        self.pending_to_client = b""
        self.pending_events: list[Data | Ping | Pong | Close] = []
        self.client_failed = False
        self.backend_failed = False
        self.backend_eof = False
        self._handed_back = trio.Event()

    def finish(self, code: int | None, reason: str, by: str) -> None:
        if self.outcome is None:
            self.outcome = Outcome(code, reason, by)
        assert self.scope is not None
        self.scope.cancel()

    def check_timers(self, now: float) -> float | None:
        """End the tunnel if a timer expired (return None); else return the next deadline."""
        s = self.settings
        read_idle = s.max_read_idle or math.inf
        deadline = self.last_client_read + read_idle
        what = "idle"
        if s.backend_read_timeout:
            d = self.last_backend_read + s.backend_read_timeout
            if d < deadline:
                deadline, what = d, "backend read"
        started = self.sender.write_started
        if started is not None and s.max_write_idle and started + s.max_write_idle < deadline:
            deadline, what = started + s.max_write_idle, "client write"
        started = self.backend_write_started
        if started is not None and s.backend_write_timeout and started + s.backend_write_timeout < deadline:
            deadline, what = started + s.backend_write_timeout, "backend write"
        if now < deadline:
            return deadline
        if what == "idle":
            self.finish(CloseReason.GOING_AWAY, "idle timeout", "idle")
        elif what == "client write":
            self.sender.broken = True
            self.finish(None, "client stopped reading (max-write-idle)", "client")
        else:
            self.finish(CloseReason.INTERNAL_ERROR, f"{what} timeout", "backend")
        return None

    async def watchdog(self) -> None:
        """Enforce the timers precisely (used when there is no :class:`TimerService`)."""
        s = self.settings
        # A write may start after we went to sleep: wake at least this often.
        poll = min(s.max_write_idle or math.inf, s.backend_write_timeout or math.inf, 5.0)
        while True:
            now = trio.current_time()
            deadline = self.check_timers(now)
            if deadline is None:
                return
            await trio.sleep_until(min(deadline, now + poll))

    # -- the hub's fast path (see wstrio._io.streams.fastpath.hub) ------------------------------

    def can_use_hub(self) -> bool:
        return isinstance(self.client, FdPipe) and isinstance(self.backend, FdPipe) and self.settings.ping_interval <= 0

    async def run_in_hub(self, hub: Hub) -> None:
        """Let the hub move the data until it hands the tunnel back (or we are cancelled)."""
        assert isinstance(self.client, FdPipe)
        assert isinstance(self.backend, FdPipe)
        cfd, bfd = self.client.fd, self.backend.fd
        self._forward_client_events()  # bytes pipelined behind the handshake
        if self._handed_back.is_set():
            return
        hub.register(cfd, self._client_readable, self._hub_failed)
        hub.register(bfd, self._backend_readable, self._hub_failed)
        try:
            await self._handed_back.wait()
        finally:
            hub.unregister(cfd)
            hub.unregister(bfd)

    def _hand_back(self) -> None:
        self._handed_back.set()

    def _hub_failed(self) -> None:
        # A bug in the fast path: end this tunnel as a backend error would.
        self.backend_failed = True
        self._hand_back()

    def _client_readable(self) -> None:
        if self._handed_back.is_set():
            return
        assert isinstance(self.client, FdPipe)
        try:
            data = os.read(self.client.fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self.client_failed = True
            self._hand_back()
            return
        self.last_client_read = trio.current_time()
        if not data:
            self.client_eof = True
            self._hand_back()
            return
        self.codec.receive_data(data)
        self._forward_client_events()

    def _forward_client_events(self) -> None:
        payload = b""
        for event in self.codec.events():
            if isinstance(event, Data):
                payload = event.data  # events() gives all data first, as one event
            else:
                self.pending_events.append(event)
        if payload:
            assert isinstance(self.backend, FdPipe)
            try:
                written = os.write(self.backend.fd, payload)
            except BlockingIOError:
                written = 0
            except OSError:
                written = 0
                self.backend_failed = True
            self.bytes_to_backend += written
            if written < len(payload):
                self.pending_to_backend = payload[written:]
                self._hand_back()
                return
        if self.pending_events:
            if len(self.pending_events) == 1 and self._close_in_hub(self.pending_events[0]):
                self.pending_events = []
            self._hand_back()

    def _close_in_hub(self, event: Data | Ping | Pong | Close) -> bool:
        """A client's CLOSE with everything written: finish here, without the tasks.

        The common end of a tunnel (the client leaves) would otherwise start
        the backend -> client task only to cancel it.  Returns False to let
        the tasks handle it.
        """
        if not isinstance(event, Close) or event.error:
            return False
        assert isinstance(self.backend, FdPipe)
        assert isinstance(self.client, FdPipe)
        self.backend.shutdown_write_nowait()
        frame = self.codec.close(CloseReason.NORMAL_CLOSURE)
        try:
            written = os.write(self.client.fd, frame)
        except BlockingIOError:
            written = 0
        except OSError:
            self.sender.broken = True
            written = len(frame)
        self.pending_to_client = frame[written:]
        self.outcome = Outcome(CloseReason.NORMAL_CLOSURE, "", "client")
        return True

    def _backend_readable(self) -> None:
        if self._handed_back.is_set():
            return
        assert isinstance(self.backend, FdPipe)
        assert isinstance(self.client, FdPipe)
        try:
            data = os.read(self.backend.fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self.backend_failed = True
            self._hand_back()
            return
        self.last_backend_read = trio.current_time()
        if not data:
            self.backend_eof = True
            self._hand_back()
            return
        if self.framer is not None:
            data = self.framer.feed(data)
            if not data:
                return
        frame = self.codec.data(data)
        try:
            written = os.write(self.client.fd, frame)
        except BlockingIOError:
            written = 0
        except OSError:
            self.client_failed = True
            self._hand_back()
            return
        self.sender.bytes_sent += written
        if written < len(frame):
            self.pending_to_client = frame[written:]
            self._hand_back()

    # -- the tasks ------------------------------------------------------------

    async def _to_backend(self, data: bytes) -> bool:
        self.backend_write_started = trio.current_time()
        try:
            await self.backend.send_all(data)
        except BROKEN as exc:
            self.finish(CloseReason.INTERNAL_ERROR, "backend write failed", "backend")
            log.info("backend write failed: %r", exc)
            return False
        finally:
            self.backend_write_started = None
        self.bytes_to_backend += len(data)
        return True

    async def _backend_eof(self) -> None:
        try:
            await self.backend.send_eof()
        except BROKEN:
            pass

    async def client_to_backend(self) -> None:
        codec = self.codec
        # What the hub left: data it could not write, events it does not handle.
        if self.client_failed:
            self.sender.broken = True
            self.finish(None, "client connection lost", "client")
            return
        if self.backend_failed:
            self.finish(CloseReason.INTERNAL_ERROR, "backend write failed", "backend")
            return
        if self.pending_to_backend:
            pending, self.pending_to_backend = self.pending_to_backend, b""
            if not await self._to_backend(pending):
                return
        if self.pending_events:
            events, self.pending_events = self.pending_events, []
            if not await self._handle(events):
                return
        if self.client_eof:
            await self._backend_eof()
            await trio.sleep_forever()
        # Bytes pipelined behind the handshake were fed to the codec already.
        if not await self._handle_events():
            return
        receive = self.client.receive
        while True:
            try:
                data = await receive()
            except BROKEN:
                self.sender.broken = True
                self.finish(None, "client connection lost", "client")
                return
            self.last_client_read = trio.current_time()
            if not data:
                # TCP half-close without a CLOSE frame: pass the EOF on, and
                # let the backend finish; it closing ends the tunnel (1001),
                # or the idle timeout does.
                self.client_eof = True
                await self._backend_eof()
                await trio.sleep_forever()
            codec.receive_data(data)
            if not await self._handle_events():
                return

    async def _handle_events(self) -> bool:
        return await self._handle(self.codec.events())

    async def _handle(self, events: Iterable[Data | Ping | Pong | Close]) -> bool:
        for event in events:
            if isinstance(event, Data):
                if not await self._to_backend(event.data):
                    return False
            elif isinstance(event, Ping):
                await self.sender.send(self.codec.pong(event.payload))
            elif isinstance(event, Pong):
                if self.pong is not None:
                    self.pong.set()
            elif isinstance(event, Close):
                if event.error:
                    self.finish(event.code, event.reason, "protocol")
                else:
                    # Everything the client sent before its CLOSE has been
                    # written; now the backend sees EOF (lighttpd loses data
                    # that arrives in the same read as the CLOSE).
                    await self._backend_eof()
                    self.finish(CloseReason.NORMAL_CLOSURE, "", "client")
                return False
        return True

    async def backend_to_client(self) -> None:
        codec = self.codec
        framer = self.framer
        receive = self.backend.receive
        send = self.sender.send
        if self.pending_to_client:
            pending, self.pending_to_client = self.pending_to_client, b""
            if not await send(pending):
                self.finish(None, "client gone", "client")
                return
        if self.backend_eof:
            if framer is not None and (tail := framer.flush()):
                await send(codec.data(tail))
            self.finish(CloseReason.GOING_AWAY, "", "backend")
            return
        while True:
            try:
                data = await receive()
            except BROKEN as exc:
                log.info("backend read failed: %r", exc)
                self.finish(CloseReason.INTERNAL_ERROR, "backend read failed", "backend")
                return
            self.last_backend_read = trio.current_time()
            if not data:
                if framer is not None and (tail := framer.flush()):
                    await send(codec.data(tail))
                self.finish(CloseReason.GOING_AWAY, "", "backend")
                return
            if framer is not None:
                data = framer.feed(data)
                if not data:
                    continue
            if not await send(codec.data(data)):
                self.finish(None, "client gone", "client")
                return

    async def pinger(self) -> None:
        interval = self.settings.ping_interval
        pong_timeout = self.settings.pong_timeout or interval
        while True:
            await trio.sleep(interval)
            self.pong = pong = trio.Event()
            if not await self.sender.send(self.codec.ping(b"ping")):
                self.finish(None, "client gone", "client")
                return
            with trio.move_on_after(pong_timeout):
                await pong.wait()
                continue
            self.finish(CloseReason.INTERNAL_ERROR, "no pong within pong-timeout", "ping")
            return

    async def close(self, shutdown: bool) -> None:
        """Send the close frame and wait, bounded, for the client's CLOSE."""
        outcome = self.outcome
        assert outcome is not None
        if outcome.code is None or self.sender.broken:
            return
        timeout = self.settings.shutdown_timeout if shutdown else self.settings.close_timeout
        with trio.move_on_after(timeout, shield=True):
            if not self.codec.close_sent:
                if not await self.sender.send(self.codec.close(outcome.code, outcome.reason)):
                    return
            if self.codec.closed_by_client or self.client_eof or outcome.by == "protocol":
                # After a protocol error, RFC 6455 section 7.1.7: send CLOSE,
                # then stop processing the client's data (even its CLOSE).
                return
            # Read (and drop) until the client's CLOSE or EOF.
            while True:
                try:
                    data = await self.client.receive()
                except BROKEN:
                    return
                if not data:
                    return
                self.codec.receive_data(data)
                if any(isinstance(e, Close) for e in self.codec.events()):
                    return


async def run_tunnel(
    client: trio.abc.Stream,
    backend: trio.abc.Stream,
    codec: WebSocketCodec,
    settings: TunnelSettings,
    timers: TimerService | None = None,
    hub: Hub | None = None,
) -> Outcome:
    """Relay between a WebSocket client and a backend until either side ends.

    Args:
        client: the client's stream, after the handshake (bytes the client
            pipelined behind the handshake must already be fed to ``codec``).
        backend: the backend's byte stream.
        codec: the client's WebSocket codec.
        settings: timers.
        timers: the server's :class:`TimerService`; without one, the tunnel
            runs its own watchdog task (exact to the deadline).
        hub: the server's :class:`~wstrio._io.streams.fastpath.hub.Hub`; plain-socket tunnels
            without pings start there and come back to their tasks at the
            first event that is not plain data.

    Returns:
        how the tunnel ended.  Neither stream is closed: the caller owns them.

    Cancellation: when cancelled from outside (server shutdown) the client
    gets CLOSE 1001, bounded by ``settings.shutdown_timeout``, and then
    :class:`trio.Cancelled` propagates.
    """
    tunnel = _Tunnel(client, backend, codec, settings)
    shutdown = True
    try:
        async with trio.open_nursery() as nursery:
            tunnel.scope = nursery.cancel_scope
            if timers is None:
                nursery.start_soon(tunnel.watchdog)
            else:
                timers.add(tunnel)
            if hub is not None and hub.running and tunnel.can_use_hub():
                await tunnel.run_in_hub(hub)
            if tunnel.outcome is None:
                nursery.start_soon(tunnel.backend_to_client)
                if settings.ping_interval > 0:
                    nursery.start_soon(tunnel.pinger)
                # The client -> backend pump runs in this task, the nursery's
                # body: one task fewer per tunnel (memory per idle tunnel).
                await tunnel.client_to_backend()
            else:
                # It ended in the hub (the client closed): what may be left is
                # the rest of our CLOSE frame, when the client's socket was full.
                if tunnel.pending_to_client:
                    await tunnel.sender.send(tunnel.pending_to_client)
                nursery.cancel_scope.cancel()  # the watchdog, if any
        shutdown = False
    finally:
        if timers is not None:
            timers.discard(tunnel)
        if tunnel.outcome is None:
            tunnel.outcome = Outcome(CloseReason.GOING_AWAY, "server shutting down", "shutdown")
        await tunnel.close(shutdown)
    return tunnel.outcome
