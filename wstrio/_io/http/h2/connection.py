"""HTTP/2 connections on h2, with WebSockets over extended CONNECT (RFC 8441).

Theory of operation
-------------------
**Tasks.**  :func:`serve_h2` runs one nursery per connection.  In it:

* the *I/O runner*, in a shielded cancel scope of its own, holds two tasks:
  the **reader** (socket -> ``h2.receive_data`` -> events) and the
  **writer**, the only task that writes to the socket;
* one **stream task** per request stream, which builds the
  :class:`~wstrio._sansio.http.request.Request` and calls the dispatcher with an
  :class:`H2Exchange` (static files, proxy, CGI, wstunnel: the same handlers
  as HTTP/1.1);
* the task that called :func:`serve_h2` waits for the connection to end and
  then shuts it down in order (below).

The h2 state machine is plain synchronous code shared by these tasks.  A task
changes it (``send_data``, ``acknowledge_received_data``, ...) and then
*kicks* the writer, which moves ``h2.data_to_send()`` into its buffer and
sends it.  Because the writer alone touches the socket, a stream task that is
cancelled never leaves half a frame on the wire.  Like a socket's send, a
send returns once its frames are queued; only when more than ``_HIGH_WATER``
bytes wait for the socket do senders wait for the writer
(:meth:`_H2Connection.wait_writer`), so memory stays bounded.  The reader
waits the same way when the control frames it answers (PING, SETTINGS) pile
up, so a peer that sends without reading cannot grow our buffers.

**Flow control, receiving.**  DATA for a stream is queued on that stream and
handed to whoever reads it (:meth:`H2Exchange.receive_body` or
:meth:`H2Stream.receive_some`).  Only then is it acknowledged to h2
(``acknowledge_received_data``), so the client gets WINDOW_UPDATE only for
bytes the handler took: a stream whose reader is slow stops its sender after
``h2-initial-window-size`` bytes, and memory per stream stays below that.
The connection window is opened to ``2 x streams x window`` at the start, so
streams that are stalled on their own windows can never use up the
connection window and block the others (h2 hands connection window back
lazily, after half of it was consumed; hence the factor 2).  Data for
streams we no longer track and padding are acknowledged at once.

**Flow control, sending.**  A stream sends at most ``min(stream window,
connection window, max frame size)`` at a time and otherwise waits on its own
event, which WINDOW_UPDATE (or a SETTINGS change, a reset, the connection's
end) sets.  A stream waiting for its window blocks nobody else.

**Streams end** as HTTP/2 wants: the response ends with END_STREAM; a
WebSocket stream ends with END_STREAM after the tunnel's CLOSE frame.  If the
client has not finished its side by then, RST_STREAM(NO_ERROR) tells it to
stop (RFC 9113 section 8.1).  A response that broke off midway is reset
(INTERNAL_ERROR) so that the client never takes it as complete.  The
client's END_STREAM is a clean half-close: the reader of the stream gets EOF
(lighttpd resets the stream instead).  The client's RST_STREAM makes every
operation on the stream raise :class:`trio.BrokenResourceError` and cancels
that stream's task, and only that one.

**Shutdown.**  When :func:`serve_h2` is cancelled (server shutdown), a GOAWAY
(NO_ERROR, last stream id) goes out first, new streams are refused, and the
stream tasks (cancelled like everything else) end: a WebSocket tunnel sends
CLOSE 1001 and waits, bounded by ``shutdown-timeout``, for the client's
CLOSE; this needs the reader and writer, which is why they are shielded.
Then a final GOAWAY, and the I/O runner is cancelled.  h2 moves its
connection state machine to CLOSED as soon as it sends a GOAWAY and then
refuses all traffic (python-hyper/h2#1181), so the first GOAWAY is written
as a raw frame behind h2's back; the final one goes through h2.  When the
connection ends by itself (client closed it, protocol error, client GOAWAY,
idle timeout, socket error) every stream is marked broken and cancelled,
and the same bounded wait follows.

**Limits.**  ``SETTINGS_MAX_CONCURRENT_STREAMS`` is
``h2-max-concurrent-streams`` (h2 enforces it; a client that opens more
after acknowledging our SETTINGS gets a connection error).  Stream tasks
still finishing after a reset count too, and beyond twice the limit new
streams are refused (REFUSED_STREAM): the "rapid reset" pattern cannot pile
up tasks.  ``SETTINGS_MAX_HEADER_LIST_SIZE`` is ``max-request-field-size``;
a larger header list gets 431 on its stream, and h2's decoder refuses
(connection error) only above 64 KiB.  Malformed requests get 400 on their
stream, never a connection error (see :meth:`Request.from_h2`).

**Timeouts.**  With no stream open, the connection is closed (GOAWAY) after
``max-keep-alive-idle`` seconds (``max-read-idle`` before the first
request).  Streams have their own timeouts: ``max-read-idle`` in the tunnel
and for request bodies, ``max-write-idle`` for each send (lighttpd times h2
connections out only as a whole).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import final

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from wstrio._config import ServerConfig
from wstrio._errors import HandshakeRejected
from wstrio._io.http.exchange import ClientGone, Dispatch, Upgraded, reason_phrase
from wstrio._io.http.h1 import SERVER_HEADER
from wstrio._io.streams.pipes import BROKEN, READ_SIZE
from wstrio._sansio.http.request import H2_CONNECTION_HEADERS, Request
from wstrio._sansio.http.static import http_date

__all__ = ["PREFACE", "H2Exchange", "H2Stream", "read_preface", "serve_h2"]

log = logging.getLogger("wstrio.connection")
access_log = logging.getLogger("wstrio.access")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""The client connection preface; a cleartext connection starting with it is h2c."""


_HIGH_WATER = 256 << 10
"""Bytes waiting for the writer above which senders (and the reader) wait for it.

Below it a send returns as soon as its frames are queued, as a socket's
send returns once the kernel has the bytes: a stream task is then rarely
inside a send when it is cancelled, so a tunnel can still say CLOSE 1001."""
_FINISH_TIMEOUT = 5.0
"""Bound on ending one stream (END_STREAM or RST_STREAM reaching the socket)."""
_FINAL_FLUSH_TIMEOUT = 2.0
"""Bound on writing the last GOAWAY when the connection ends."""
_MAX_WINDOW = (1 << 31) - 1
_DEFAULT_WINDOW = 65535
# Response headers HTTP/2 forbids, plus the ones that make no sense in the
# 200 to an extended CONNECT (RFC 8441 section 5, RFC 9110 9.3.6).
_UPGRADE_DROP = H2_CONNECTION_HEADERS | {b"sec-websocket-accept", b"content-length", b"te"}


async def read_preface(stream: trio.abc.Stream, patience: float) -> bytes | None:
    """Read until the bytes either are or cannot be the HTTP/2 preface.

    HTTP/1.1 request lines differ from :data:`PREFACE` in their first bytes,
    so an HTTP/1.1 client costs no extra wait.

    Returns:
        every byte read (starting with :data:`PREFACE` for h2c; otherwise to
        be passed to HTTP/1.1 as ``initial``), or ``None`` when the client
        closed the connection or sent nothing that decides within
        ``patience`` seconds.

    Cancellation: safe; the bytes read so far are lost with the connection.

    Resource handling: reads only; ``stream`` stays the caller's.

    Error handling: a broken or closed stream is ``None``, like an EOF.
    """
    data = b""
    with trio.move_on_after(patience):
        while len(data) < len(PREFACE) and PREFACE.startswith(data):
            try:
                chunk = await stream.receive_some(READ_SIZE)
            except BROKEN:
                return None
            if not chunk:
                return None
            data += chunk
        return data
    return None


@final
class _Stream:
    """State of one stream, shared by the reader, its task, its exchange and its adapter."""

    def __init__(self, stream_id: int) -> None:
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


@final
class _H2Connection:
    """One HTTP/2 connection: the h2 state, the streams, the reader and the writer."""

    def __init__(
        self,
        transport: trio.abc.Stream,
        config: ServerConfig,
        dispatch: Dispatch,
        *,
        scheme: str,
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
    ) -> None:
        self.transport = transport
        self.config = config
        self.dispatch = dispatch
        self.scheme = scheme
        self.client = client
        self.server = server
        self.peer = f"{client[0]}:{client[1]}" if client else "unix"
        # h2's own header validation raises connection errors; Request.from_h2
        # validates per stream instead (see its docstring).
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None, validate_inbound_headers=False)
        )
        codes = h2.settings.SettingCodes
        self.max_streams = config.h2_max_concurrent_streams
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                codes.MAX_CONCURRENT_STREAMS: self.max_streams,
                codes.INITIAL_WINDOW_SIZE: config.h2_initial_window_size,
                codes.MAX_HEADER_LIST_SIZE: config.max_request_field_size,
                codes.ENABLE_CONNECT_PROTOCOL: 1,
            },
        )
        self.h2.initiate_connection()
        window = min(2 * self.max_streams * config.h2_initial_window_size, _MAX_WINDOW)
        if window > _DEFAULT_WINDOW:
            self.h2.increment_flow_control_window(window - _DEFAULT_WINDOW)
        self.streams: dict[int, _Stream] = {}
        self.tasks = 0
        self._no_tasks = trio.Event()
        self.served = 0
        self.nursery: trio.Nursery | None = None
        self.io_scope = trio.CancelScope(shield=True)
        self.read_scope: trio.CancelScope | None = None
        self.idle_since = trio.current_time()
        # The writer's buffer and its counters: `queued` bytes were put into
        # `out` so far, `written` of them reached the socket.
        self.out = bytearray()
        self.queued = 0
        self.written = 0
        self.wake_writer = trio.Event()
        self.progress = trio.Event()
        self.broken = False
        """The socket failed or the h2 connection is closed: nothing more can be sent."""
        self.closing = False
        """A GOAWAY went out: new streams are refused."""
        self.goaway_sent = False
        """h2 itself sent the final GOAWAY (after a protocol error)."""
        self.done = trio.Event()
        """The connection is over (set by the reader or the writer)."""

    # -- the writer -----------------------------------------------------------

    def _pull(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.out += data
            self.queued += len(data)

    def kick(self) -> None:
        """Hand whatever h2 has to send to the writer (never blocks)."""
        self._pull()
        if self.out:
            self.wake_writer.set()

    async def drain(self) -> None:
        """Wait until everything queued so far has been written.

        Raises:
            trio.BrokenResourceError: the connection is gone.
        """
        self.kick()
        target = self.queued
        while self.written < target:
            if self.broken:
                msg = "the HTTP/2 connection is gone"
                raise trio.BrokenResourceError(msg)
            await self.progress.wait()

    async def write_loop(self) -> None:
        write_idle = self.config.max_write_idle or math.inf
        while True:
            self._pull()
            if not self.out:
                self.wake_writer = trio.Event()
                await self.wake_writer.wait()
                continue
            data = bytes(self.out)
            self.out.clear()
            try:
                with trio.fail_after(write_idle):
                    await self.transport.send_all(data)
            except (*BROKEN, trio.TooSlowError) as exc:
                log.debug("%s: HTTP/2 write failed: %r", self.peer, exc)
                self.lost()
                return
            self.written += len(data)
            progress, self.progress = self.progress, trio.Event()
            progress.set()

    def lost(self) -> None:
        """The socket cannot be used any more: fail every stream, end the connection."""
        self.broken = True
        self.progress.set()
        self.fail_streams()
        self.done.set()

    def fail_streams(self) -> None:
        """Every stream fails (reset as seen by its users) and its task is cancelled."""
        for st in self.streams.values():
            st.reset = True
            st.wake()
            st.scope.cancel()

    # -- the reader -----------------------------------------------------------

    def _update_idle_deadline(self) -> None:
        if self.read_scope is None:
            return
        if self.tasks:
            self.read_scope.deadline = math.inf
        else:
            idle = self.config.max_keep_alive_idle if self.served else self.config.max_read_idle
            self.read_scope.deadline = self.idle_since + (idle or math.inf)

    async def read_loop(self, initial: bytes) -> None:
        try:
            if initial and not self._receive(initial):
                return
            while True:
                data: bytes | bytearray | None = None
                with trio.CancelScope() as self.read_scope:
                    self._update_idle_deadline()
                    data = await self.transport.receive_some(READ_SIZE)
                self.read_scope = None
                if data is None:
                    # The idle deadline passed with no stream open; close()
                    # sends the GOAWAY.
                    if not self.tasks:
                        log.debug("%s: HTTP/2 connection idle", self.peer)
                        return
                    continue
                if not data:
                    return
                if not self._receive(data):
                    return
                if len(self.out) > _HIGH_WATER:
                    await self.drain()
        except BROKEN as exc:
            log.debug("%s: HTTP/2 read failed: %r", self.peer, exc)
            self.lost()
        finally:
            self.done.set()

    def _receive(self, data: bytes | bytearray) -> bool:
        """Feed ``data`` to h2 and handle the events; False when the connection is over."""
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued a GOAWAY with the error code; send it, then stop.
            log.info("%s: HTTP/2 protocol error: %s", self.peer, exc)
            self.goaway_sent = True
            self.kick()
            self.fail_streams()
            return False
        go_on = True
        for event in events:
            if not self._handle(event):
                go_on = False
        self.kick()
        return go_on

    def _handle(self, event: h2.events.Event) -> bool:
        if isinstance(event, h2.events.RequestReceived):
            self._new_stream(event)
        elif isinstance(event, h2.events.DataReceived):
            self._data(event)
        elif isinstance(event, h2.events.StreamEnded):
            st = self.streams.get(event.stream_id or 0)
            if st is not None:
                st.peer_ended = True
                st.readable.set()
        elif isinstance(event, h2.events.StreamReset):
            st = self.streams.get(event.stream_id or 0)
            if st is not None:
                st.reset = True
                st.wake()
                if event.remote_reset:
                    log.debug("%s: stream %d reset by the client (%s)", self.peer, st.stream_id, event.error_code)
                    st.scope.cancel()
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id:
                st = self.streams.get(event.stream_id)
                if st is not None:
                    st.writable.set()
            else:
                for st in self.streams.values():
                    st.writable.set()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                for st in self.streams.values():
                    st.writable.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # h2 closes its state machine on a received GOAWAY, so the
            # streams cannot go on (clients send it when they are leaving).
            log.debug("%s: GOAWAY from the client (%s)", self.peer, event.error_code)
            self.fail_streams()
            return False
        return True

    def _new_stream(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id or 0
        if self.closing or self.tasks >= 2 * self.max_streams or self.nursery is None:
            self.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        st = _Stream(stream_id)
        if event.stream_ended is not None:
            st.peer_ended = True
        self.streams[stream_id] = st
        self.tasks += 1
        self._update_idle_deadline()
        self.nursery.start_soon(self._run_stream, st, tuple(event.headers or ()))

    def _data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id or 0
        data = event.data or b""
        flow = event.flow_controlled_length or 0
        st = self.streams.get(stream_id)
        if st is None or st.reset or st.discard:
            self.acknowledge(stream_id, flow)
            return
        # Padding is never read by anyone: hand it back now.
        self.acknowledge(stream_id, flow - len(data))
        if data:
            st.buffer.append(data)
            st.buffered += len(data)
            st.readable.set()

    # -- operations on streams ------------------------------------------------

    def acknowledge(self, stream_id: int, n: int) -> None:
        """Tell h2 that ``n`` flow-controlled bytes of ``stream_id`` were consumed."""
        if n <= 0 or self.broken:
            return
        try:
            self.h2.acknowledge_received_data(n, stream_id)
        except h2.exceptions.H2Error:
            pass

    def reset_stream(self, stream_id: int, code: ErrorCodes) -> None:
        try:
            self.h2.reset_stream(stream_id, code)
        except h2.exceptions.H2Error:
            pass
        self.kick()

    def _failure(self, st: _Stream, exc: h2.exceptions.H2Error) -> BaseException:
        """What an h2 error while sending means: the stream or connection is gone, or a bug."""
        if (
            st.reset
            or self.broken
            or isinstance(exc, h2.exceptions.StreamClosedError)
            or (self.h2.state_machine.state is h2.connection.ConnectionState.CLOSED)
        ):
            msg = f"HTTP/2 stream {st.stream_id} cannot send: {exc}"
            return trio.BrokenResourceError(msg)
        return exc

    def _check_send(self, st: _Stream) -> None:
        if st.reset or self.broken:
            msg = "the HTTP/2 stream was reset" if st.reset else "the HTTP/2 connection is gone"
            raise trio.BrokenResourceError(msg)
        if st.local_ended:
            msg = "the HTTP/2 stream was ended (send_eof or end of response)"
            raise trio.ClosedResourceError(msg)

    async def receive(self, st: _Stream, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of the stream's data; ``b""`` after the client's END_STREAM.

        Raises:
            trio.BrokenResourceError: the stream was reset or the connection is gone.
        """
        while True:
            if st.reset or self.broken:
                msg = "the HTTP/2 stream was reset" if st.reset else "the HTTP/2 connection is gone"
                raise trio.BrokenResourceError(msg)
            if st.buffer:
                parts = []
                taken = 0
                while st.buffer and taken < max_bytes:
                    chunk = st.buffer.popleft()
                    room = max_bytes - taken
                    if len(chunk) > room:
                        st.buffer.appendleft(chunk[room:])
                        chunk = chunk[:room]
                    parts.append(chunk)
                    taken += len(chunk)
                st.buffered -= taken
                # Only now does the client get window back for these bytes.
                self.acknowledge(st.stream_id, taken)
                self.kick()
                return b"".join(parts)
            if st.peer_ended:
                return b""
            st.readable = trio.Event()
            await st.readable.wait()

    async def send_data(self, st: _Stream, data: bytes) -> None:
        """Send ``data`` on the stream, within the peer's windows.

        Raises:
            trio.BrokenResourceError: the stream was reset or the connection is gone.
            trio.ClosedResourceError: our side of the stream has ended.
        """
        view = memoryview(data)
        while view:
            self._check_send(st)
            try:
                window = self.h2.local_flow_control_window(st.stream_id)
                if window <= 0:
                    st.writable = trio.Event()
                    await st.writable.wait()
                    continue
                n = min(len(view), window, self.h2.max_outbound_frame_size)
                self.h2.send_data(st.stream_id, bytes(view[:n]))
            except h2.exceptions.H2Error as exc:
                raise self._failure(st, exc) from exc
            view = view[n:]
            await self.wait_writer()

    async def wait_writer(self) -> None:
        """Hand new frames to the writer; wait only if too much is still unwritten.

        Raises:
            trio.BrokenResourceError: the connection is gone.
        """
        self.kick()
        if len(self.out) > _HIGH_WATER:
            await self.drain()
        elif self.broken:
            msg = "the HTTP/2 connection is gone"
            raise trio.BrokenResourceError(msg)

    async def send_headers(self, st: _Stream, headers: list[tuple[bytes, bytes]], *, end_stream: bool = False) -> None:
        self._check_send(st)
        try:
            self.h2.send_headers(st.stream_id, headers, end_stream=end_stream)
        except h2.exceptions.H2Error as exc:
            raise self._failure(st, exc) from exc
        if end_stream:
            st.local_ended = True
        await self.wait_writer()

    def end_stream_nowait(self, st: _Stream) -> None:
        """Queue END_STREAM (once); a no-op on a reset stream."""
        if st.local_ended or st.reset or self.broken:
            return
        st.local_ended = True
        try:
            self.h2.end_stream(st.stream_id)
        except h2.exceptions.H2Error:
            st.reset = True
        self.kick()

    async def wait_writable(self, st: _Stream) -> None:
        while True:
            self._check_send(st)
            try:
                if self.h2.local_flow_control_window(st.stream_id) > 0:
                    return
            except h2.exceptions.H2Error as exc:
                raise self._failure(st, exc) from exc
            st.writable = trio.Event()
            await st.writable.wait()

    def discard(self, st: _Stream) -> None:
        """Nobody reads this stream any more: return its window, drop its data."""
        st.discard = True
        if st.buffered:
            self.acknowledge(st.stream_id, st.buffered)
            st.buffer.clear()
            st.buffered = 0
            self.kick()

    # -- stream tasks -----------------------------------------------------------

    async def _run_stream(self, st: _Stream, headers: tuple[tuple[bytes, bytes], ...]) -> None:
        started = trio.current_time()
        exchange: H2Exchange | None = None
        wire_method = _pseudo(headers, b":method")
        finished = False
        try:
            with st.scope:
                try:
                    request = Request.from_h2(
                        headers,
                        scheme=self.scheme,
                        client=self.client,
                        server=self.server,
                        max_header_list_size=self.config.max_request_field_size,
                        max_headers=self.config.max_request_headers,
                    )
                except HandshakeRejected as exc:
                    log.info("%s: stream %d: %s", self.peer, st.stream_id, exc)
                    await _send_error(self, st, exc.status_code, exc.headers)
                    target = _pseudo(headers, b":path")
                    _log_access(self.peer, wire_method, target, exc.status_code, 0, started, str(exc))
                    return
                self.served += 1
                exchange = H2Exchange(self, st, request)
                await self.dispatch(exchange)
            finished = True
        except (ClientGone, *BROKEN):
            finished = True
        except Exception:
            finished = True
            log.exception("%s: HTTP/2 stream %d failed", self.peer, st.stream_id)
        finally:
            with trio.move_on_after(_FINISH_TIMEOUT, shield=True):
                await self._finish_stream(st, exchange, cancelled=not finished)
            self._forget(st)
            if exchange is not None:
                _log_access(
                    self.peer,
                    wire_method,
                    exchange.request.target,
                    exchange.status,
                    exchange.bytes_sent,
                    started,
                    exchange.note,
                )

    async def _finish_stream(self, st: _Stream, exchange: H2Exchange | None, *, cancelled: bool) -> None:
        self.discard(st)
        if st.reset or self.broken:
            return
        try:
            if cancelled and (exchange is None or not exchange.upgraded) and not st.local_ended:
                # Server shutdown in the middle of a request: we cannot say
                # whether it was processed; CANCEL says so.
                self.reset_stream(st.stream_id, ErrorCodes.CANCEL)
                st.reset = True
            elif exchange is not None and exchange.status is None:
                # The handler returned without answering (as HTTP/1.1 does).
                await _send_error(self, st, 500)
            elif not st.local_ended:
                if exchange is not None and exchange.upgraded:
                    # The tunnel is over (its CLOSE frame went out): a clean end.
                    self.end_stream_nowait(st)
                else:
                    # A response that broke off: the client must not take it as whole.
                    self.reset_stream(st.stream_id, ErrorCodes.INTERNAL_ERROR)
                    st.reset = True
            if not st.peer_ended and not st.reset:
                # Our answer is complete; the client may stop sending (RFC 9113 8.1).
                self.reset_stream(st.stream_id, ErrorCodes.NO_ERROR)
                st.reset = True
            await self.wait_writer()
        except BROKEN:
            pass

    def _forget(self, st: _Stream) -> None:
        st.reset = True
        st.wake()
        self.streams.pop(st.stream_id, None)
        self.tasks -= 1
        if not self.tasks:
            self.idle_since = trio.current_time()
            self._no_tasks.set()
        self._update_idle_deadline()

    async def wait_no_tasks(self) -> None:
        while self.tasks:
            self._no_tasks = trio.Event()
            await self._no_tasks.wait()

    # -- the connection's life ---------------------------------------------------

    async def run_io(self, initial: bytes, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Shielded: during a server shutdown the tunnels still need to send
        # their CLOSE and read the client's.  close() cancels this scope.
        with self.io_scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.write_loop)
                task_status.started()
                await self.read_loop(initial)

    def goaway_now(self) -> None:
        """Send GOAWAY(NO_ERROR) without closing h2's state machine (python-hyper/h2#1181).

        It goes ahead of every frame not yet written (``out`` holds whole
        frames), so the client learns of the shutdown before the tunnels'
        CLOSE frames.
        """
        self.closing = True
        frame = GoAwayFrame(0, last_stream_id=self.h2.highest_inbound_stream_id, error_code=ErrorCodes.NO_ERROR)
        raw = frame.serialize()
        self._pull()
        self.out[:0] = raw
        self.queued += len(raw)
        self.wake_writer.set()

    async def close(self, *, shutdown: bool) -> None:
        """Bring the connection down in order (see the module docstring)."""
        self.closing = True
        if shutdown and not self.broken and not self.done.is_set():
            self.goaway_now()
            # The stream tasks were cancelled with us; tunnels say 1001 and
            # wait for the client's CLOSE, each bounded by shutdown-timeout.
            with trio.move_on_after(self.config.shutdown_timeout + _FINISH_TIMEOUT):
                await self.wait_no_tasks()
        # Whatever is left (or everything, when the connection ended by
        # itself) is cut now.
        self.fail_streams()
        with trio.move_on_after(_FINISH_TIMEOUT):
            await self.wait_no_tasks()
        if not self.broken:
            if not self.goaway_sent:
                self.h2.close_connection()
            with trio.move_on_after(_FINAL_FLUSH_TIMEOUT):
                try:
                    await self.drain()
                except BROKEN:
                    pass
        self.broken = True
        self.io_scope.cancel()


def _pseudo(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes:
    for key, value in headers:
        if key == name:
            return value
    return b"-"


def _log_access(
    peer: str, method: bytes, target: bytes, status: int | None, sent: int, started: float, note: str
) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    access_log.info(
        '%s "%s %s HTTP/2" %s %d %.3fs%s',
        peer,
        method.decode("latin-1"),
        target.decode("latin-1"),
        status if status is not None else "-",
        sent,
        trio.current_time() - started,
        f" {note}" if note else "",
    )


def _response_headers(
    status: int, headers: Sequence[tuple[bytes, bytes]], drop: frozenset[bytes]
) -> list[tuple[bytes, bytes]]:
    out = [(b":status", str(status).encode("ascii")), SERVER_HEADER, (b"date", http_date(time.time()).encode())]
    for name, value in headers:
        name = name.lower()
        if name not in drop:
            out.append((name, value))
    return out


async def _send_error(
    conn: _H2Connection, st: _Stream, status: int, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = b"%d %s\n" % (status, reason_phrase(status))
    hdrs = [
        *headers,
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    await conn.send_headers(st, _response_headers(status, hdrs, H2_CONNECTION_HEADERS))
    await conn.send_data(st, body)
    conn.end_stream_nowait(st)
    await conn.wait_writer()


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

    def __init__(self, conn: _H2Connection, st: _Stream) -> None:
        self._conn = conn
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
            await self._conn.send_data(self._st, bytes(data))
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the stream has flow-control window to send into."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        await self._conn.wait_writable(self._st)

    async def send_eof(self) -> None:
        """Send END_STREAM; reads still work (a half-close).  Idempotent."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        if self._st.local_ended:
            return
        self._conn._check_send(self._st)
        self._conn.end_stream_nowait(self._st)
        await self._conn.wait_writer()

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
            return await self._conn.receive(self._st, max_bytes)
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        """End our side (END_STREAM, unless reset) and drop unread data."""
        if not self._closed:
            self._closed = True
            self._conn.discard(self._st)
            self._conn.end_stream_nowait(self._st)
        await trio.lowlevel.checkpoint()


@final
class H2Exchange:
    """One request on an HTTP/2 stream (see :class:`~wstrio._io.http.exchange.Exchange`)."""

    def __init__(self, conn: _H2Connection, st: _Stream, request: Request) -> None:
        self._conn = conn
        self._st = st
        self._request = request
        self.status: int | None = None
        self.bytes_sent = 0
        self.upgraded = False
        self.note = ""
        self._swallow_body = False

    @property
    def request(self) -> Request:
        return self._request

    @property
    def response_started(self) -> bool:
        return self.status is not None

    @property
    def stream_id(self) -> int:
        """The HTTP/2 stream id."""
        return self._st.stream_id

    def set_log_note(self, note: str) -> None:
        self.note = note

    async def receive_body(self, max_bytes: int = 65536) -> bytes:
        """The next chunk of the request body; ``b""`` at its end.

        An extended CONNECT has no body, like the HTTP/1.1 ``GET`` it stands
        for: its DATA is the WebSocket, read through :meth:`upgrade`'s
        stream.  So this returns ``b""`` for it at once (a handler that
        drains the body before upgrading must not wait for WebSocket frames).

        Raises:
            ClientGone: the stream was reset or the connection is gone.
            trio.TooSlowError: nothing arrived for ``max-read-idle`` seconds.
        """
        if self._request.websocket:
            await trio.lowlevel.checkpoint()
            return b""
        try:
            with trio.fail_after(self._conn.config.max_read_idle or math.inf):
                return await self._conn.receive(self._st, max_bytes)
        except BROKEN as exc:
            raise ClientGone from exc

    async def _send(self, operation: Awaitable[None]) -> None:
        try:
            with trio.fail_after(self._conn.config.max_write_idle or math.inf):
                await operation
        except (*BROKEN, trio.TooSlowError) as exc:
            raise ClientGone from exc

    async def start_response(self, status: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
        """Send the response headers.

        A 2xx answer to an extended CONNECT that is not an upgrade becomes a
        405, as in lighttpd: the client asked for a WebSocket, and a page is
        not one.
        """
        if self._request.websocket and 200 <= status < 300:
            self.note = f"{status} from the handler is no WebSocket answer; 405"
            self._swallow_body = True
            self.status = 405
            await self._send(_send_error(self._conn, self._st, 405))
            return
        self.status = status
        await self._send(self._conn.send_headers(self._st, _response_headers(status, headers, H2_CONNECTION_HEADERS)))

    async def send_data(self, data: bytes) -> None:
        if self._request.method == "HEAD" or self._swallow_body or not data:
            return
        self.bytes_sent += len(data)
        await self._send(self._conn.send_data(self._st, data))

    async def end_response(self) -> None:
        self._conn.end_stream_nowait(self._st)
        await self._send(self._conn.wait_writer())

    async def upgrade(self, headers: Sequence[tuple[bytes, bytes]], *, status: int = 101) -> Upgraded:
        """Accept the extended CONNECT: ``:status 200``, then the stream carries WebSocket frames.

        ``status`` is ignored: HTTP/2 has no 101, the answer is always 200
        (RFC 8441 section 5).  Headers HTTP/2 forbids or that belong to the
        HTTP/1.1 handshake (``upgrade``, ``connection``,
        ``sec-websocket-accept``, ``content-length``, ...) are dropped, so a
        backend's 101 headers can be passed as they are.

        Raises:
            ClientGone: the stream was reset or the connection is gone.
            RuntimeError: the request is not an extended CONNECT.
        """
        del status
        if not self._request.websocket:
            msg = "upgrade() on HTTP/2 needs an extended CONNECT (:protocol websocket) request"
            raise RuntimeError(msg)
        self.status = 200
        await self._send(self._conn.send_headers(self._st, _response_headers(200, headers, _UPGRADE_DROP)))
        self.upgraded = True
        return Upgraded(H2Stream(self._conn, self._st), b"")


async def serve_h2(
    stream: trio.abc.Stream,
    config: ServerConfig,
    dispatch: Dispatch,
    *,
    scheme: str = "https",
    client: tuple[str, int] | None = None,
    server: tuple[str, int] | None = None,
    initial: bytes = b"",
) -> None:
    """Serve an HTTP/2 connection on ``stream`` until it ends.

    Args:
        stream: the client connection, after TLS (ALPN ``h2``) or sniffing
            (h2c); closed by the caller.
        config: server settings (limits, windows, timeouts).
        dispatch: called with each stream's :class:`H2Exchange`, in its own task.
        scheme: ``"https"`` or ``"http"`` (h2c).
        client: remote address, for requests and logs.
        server: local address.
        initial: bytes already read from ``stream`` (the h2c preface).

    Cancellation: a graceful stop.  A GOAWAY goes out, new streams are
    refused, every stream task is cancelled (a tunnel sends CLOSE 1001 and
    waits for the client's CLOSE, bounded by ``shutdown-timeout``), then a
    final GOAWAY.  Raises :class:`trio.Cancelled` after at most
    ``shutdown-timeout`` + 15 seconds.

    Resource handling: every stream task ends before this returns; the
    caller closes ``stream``.

    Error handling: a handler's exception is logged and its stream reset
    (or answered 500); a malformed request gets 400 on its stream; HTTP/2
    protocol errors close the connection with GOAWAY and the error code;
    a broken socket ends the connection quietly.
    """
    conn = _H2Connection(stream, config, dispatch, scheme=scheme, client=client, server=server)
    async with trio.open_nursery() as nursery:
        conn.nursery = nursery
        await nursery.start(conn.run_io, initial)
        cancelled = True
        try:
            await conn.done.wait()
            cancelled = False
        finally:
            # Bounded in close(); shielded so a shutdown can still say goodbye.
            with trio.move_on_after(config.shutdown_timeout + 3 * _FINISH_TIMEOUT, shield=True):
                await conn.close(shutdown=cancelled)
            conn.io_scope.cancel()
