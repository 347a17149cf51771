"""One HTTP/2 stream: its state, its flow control, and its byte stream (RFC 8441).

Theory of operation
-------------------
A :class:`H2StreamState` is shared by the connection's reader (which queues
the stream's DATA and wakes it), the stream's task, its exchange
(:class:`~wstrio._io.http.h2.exchange.H2Exchange`) and, after an extended
CONNECT, its byte stream (:class:`H2Stream`).  Its operations change the
connection's h2 state and then *kick* the connection's writer (see
:mod:`wstrio._io.http.h2.connection`); none of them touches the socket.

**Flow control, receiving.**  DATA for a stream is queued on that stream and
handed to whoever reads it (:meth:`H2Exchange.receive_body` or
:meth:`H2Stream.receive_some`, both through :meth:`H2StreamState.receive`).
Only then is it acknowledged to h2 (``acknowledge_received_data``), so the
client gets WINDOW_UPDATE only for bytes the handler took: a stream whose
reader is slow stops its sender after ``h2-initial-window-size`` bytes, and
memory per stream stays below that.  The connection window is opened to
``2 x streams x window`` at the start, so streams that are stalled on their
own windows can never use up the connection window and block the others
(h2 hands connection window back lazily, after half of it was consumed;
hence the factor 2).  Data for streams we no longer track and padding are
acknowledged at once.

**Flow control, sending.**  A stream sends at most ``min(stream window,
connection window, max frame size)`` at a time and otherwise waits on its own
event, which WINDOW_UPDATE (or a SETTINGS change, a reset, the connection's
end) sets.  A stream waiting for its window blocks nobody else.

**Failure.**  The client's RST_STREAM, or the connection's end, sets
``reset``: every operation then raises :class:`trio.BrokenResourceError`.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, final

import h2.connection
import h2.exceptions
import trio

from wstrio._io.streams.pipes import READ_SIZE

if TYPE_CHECKING:
    from wstrio._io.http.h2.connection import H2Connection

__all__ = ["H2Stream", "H2StreamState"]


@final
class H2StreamState:
    """State of one stream, shared by the reader, its task, its exchange and its adapter."""

    def __init__(self, conn: H2Connection, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.scope = trio.CancelScope()
        self.buffer: deque[bytes] = deque()
        self.buffered = 0
        self.peer_ended = False
        """The client sent END_STREAM: reads give EOF once the buffer is empty."""
        self.local_ended = False
        """We sent END_STREAM."""
        self.reset = False
        """RST_STREAM either way, or the connection is gone: every operation fails."""
        self.discard = False
        """Nobody will read: incoming data is acknowledged and dropped."""
        self.readable = trio.Event()
        self.writable = trio.Event()

    def wake(self) -> None:
        self.readable.set()
        self.writable.set()

    def failure(self, exc: h2.exceptions.H2Error) -> BaseException:
        """What an h2 error while sending means: the stream or connection is gone, or a bug."""
        conn = self.conn
        if (
            self.reset
            or conn.broken
            or isinstance(exc, h2.exceptions.StreamClosedError)
            or (conn.h2.state_machine.state is h2.connection.ConnectionState.CLOSED)
        ):
            msg = f"HTTP/2 stream {self.stream_id} cannot send: {exc}"
            return trio.BrokenResourceError(msg)
        return exc

    def check_send(self) -> None:
        """Raise unless this stream can still send.

        Raises:
            trio.BrokenResourceError: the stream was reset or the connection is gone.
            trio.ClosedResourceError: our side of the stream has ended.
        """
        if self.reset or self.conn.broken:
            msg = "the HTTP/2 stream was reset" if self.reset else "the HTTP/2 connection is gone"
            raise trio.BrokenResourceError(msg)
        if self.local_ended:
            msg = "the HTTP/2 stream was ended (send_eof or end of response)"
            raise trio.ClosedResourceError(msg)

    async def receive(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of the stream's data; ``b""`` after the client's END_STREAM.

        Raises:
            trio.BrokenResourceError: the stream was reset or the connection is gone.
        """
        conn = self.conn
        while True:
            if self.reset or conn.broken:
                msg = "the HTTP/2 stream was reset" if self.reset else "the HTTP/2 connection is gone"
                raise trio.BrokenResourceError(msg)
            if self.buffer:
                parts = []
                taken = 0
                while self.buffer and taken < max_bytes:
                    chunk = self.buffer.popleft()
                    room = max_bytes - taken
                    if len(chunk) > room:
                        self.buffer.appendleft(chunk[room:])
                        chunk = chunk[:room]
                    parts.append(chunk)
                    taken += len(chunk)
                self.buffered -= taken
                # Only now does the client get window back for these bytes.
                conn.acknowledge(self.stream_id, taken)
                conn.kick()
                return b"".join(parts)
            if self.peer_ended:
                return b""
            self.readable = trio.Event()
            await self.readable.wait()

    async def send_data(self, data: bytes) -> None:
        """Send ``data`` on the stream, within the peer's windows.

        Raises:
            trio.BrokenResourceError: the stream was reset or the connection is gone.
            trio.ClosedResourceError: our side of the stream has ended.
        """
        conn = self.conn
        view = memoryview(data)
        while view:
            self.check_send()
            try:
                window = conn.h2.local_flow_control_window(self.stream_id)
                if window <= 0:
                    self.writable = trio.Event()
                    await self.writable.wait()
                    continue
                n = min(len(view), window, conn.h2.max_outbound_frame_size)
                conn.h2.send_data(self.stream_id, bytes(view[:n]))
            except h2.exceptions.H2Error as exc:
                raise self.failure(exc) from exc
            view = view[n:]
            await conn.wait_writer()

    async def send_headers(self, headers: list[tuple[bytes, bytes]], *, end_stream: bool = False) -> None:
        self.check_send()
        try:
            self.conn.h2.send_headers(self.stream_id, headers, end_stream=end_stream)
        except h2.exceptions.H2Error as exc:
            raise self.failure(exc) from exc
        if end_stream:
            self.local_ended = True
        await self.conn.wait_writer()

    def end_stream_nowait(self) -> None:
        """Queue END_STREAM (once); a no-op on a reset stream."""
        if self.local_ended or self.reset or self.conn.broken:
            return
        self.local_ended = True
        try:
            self.conn.h2.end_stream(self.stream_id)
        except h2.exceptions.H2Error:
            self.reset = True
        self.conn.kick()

    async def wait_writable(self) -> None:
        while True:
            self.check_send()
            try:
                if self.conn.h2.local_flow_control_window(self.stream_id) > 0:
                    return
            except h2.exceptions.H2Error as exc:
                raise self.failure(exc) from exc
            self.writable = trio.Event()
            await self.writable.wait()

    def discard_unread(self) -> None:
        """Nobody reads this stream any more: return its window, drop its data."""
        self.discard = True
        if self.buffered:
            self.conn.acknowledge(self.stream_id, self.buffered)
            self.buffer.clear()
            self.buffered = 0
            self.conn.kick()


@final
class H2Stream(trio.abc.HalfCloseableStream):
    """An HTTP/2 stream as a Trio byte stream, for the tunnel after an extended CONNECT.

    * :meth:`receive_some` returns the client's DATA; the client gets its
      window back only for bytes returned here (so a slow reader stalls only
      its own stream).  The client's END_STREAM is EOF (``b""``).
    * :meth:`send_all` sends DATA within the client's stream and connection
      windows, waiting for WINDOW_UPDATE as needed.
    * :meth:`send_eof` sends END_STREAM; :meth:`aclose` too, and drops data
      not yet read.
    * After the client's RST_STREAM, or when the connection is gone, every
      method raises :class:`trio.BrokenResourceError`.
    """

    def __init__(self, st: H2StreamState) -> None:
        self._st = st
        self._closed = False
        self._sending = False
        self._receiving = False

    @property
    def stream_id(self) -> int:
        """The HTTP/2 stream id."""
        return self._st.stream_id

    def _check_open(self) -> None:
        if self._closed:
            msg = "this HTTP/2 stream adapter was closed"
            raise trio.ClosedResourceError(msg)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` whole, respecting flow control.

        Raises:
            trio.BusyResourceError: another task is already sending.
            trio.BrokenResourceError: the stream was reset or the connection is gone.
            trio.ClosedResourceError: closed, or after :meth:`send_eof`.
        """
        if self._sending:
            msg = "another task is already sending on this HTTP/2 stream"
            raise trio.BusyResourceError(msg)
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            self._check_open()
            await self._st.send_data(bytes(data))
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the stream has flow-control window to send into."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        await self._st.wait_writable()

    async def send_eof(self) -> None:
        """Send END_STREAM; reads still work (a half-close).  Idempotent."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        if self._st.local_ended:
            return
        self._st.check_send()
        self._st.end_stream_nowait()
        await self._st.conn.wait_writer()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The next DATA bytes (at most ``max_bytes``); ``b""`` after the client's END_STREAM.

        Raises:
            trio.BusyResourceError: another task is already receiving.
            trio.BrokenResourceError: the stream was reset or the connection is gone.
            trio.ClosedResourceError: the adapter was closed.
        """
        if max_bytes is None:
            max_bytes = READ_SIZE
        if max_bytes < 1:
            msg = f"max_bytes must be >= 1, not {max_bytes}"
            raise ValueError(msg)
        if self._receiving:
            msg = "another task is already receiving on this HTTP/2 stream"
            raise trio.BusyResourceError(msg)
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint()
            self._check_open()
            return await self._st.receive(max_bytes)
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        """End our side (END_STREAM, unless reset) and drop unread data."""
        if not self._closed:
            self._closed = True
            self._st.discard_unread()
            self._st.end_stream_nowait()
        await trio.lowlevel.checkpoint()
