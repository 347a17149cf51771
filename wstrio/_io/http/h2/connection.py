"""HTTP/2 connections on h2, with WebSockets over extended CONNECT (RFC 8441).

Theory of operation
-------------------
**Tasks.**  :func:`serve_h2` runs one nursery per connection.  In it:

* the *I/O runner*, in a shielded cancel scope of its own, holds two tasks:
  the **reader** (socket -> ``h2.receive_data`` -> events) and the
  **writer**, the only task that writes to the socket;
* one **stream task** per request stream, which builds the
  :class:`~wstrio._sansio.http.request.Request` and calls the dispatcher with an
  :class:`~wstrio._io.http.h2.exchange.H2Exchange` (static files, proxy, CGI, wstunnel: the same handlers
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
(:meth:`H2Connection.wait_writer`), so memory stays bounded.  The reader
waits the same way when the control frames it answers (PING, SETTINGS) pile
up, so a peer that sends without reading cannot grow our buffers.

**Streams.**  Each stream's state, its flow control (a stream's reader
gets the client's window back only for bytes it took; a sender waits for its
own window) and its byte stream are in :mod:`wstrio._io.http.h2.stream`; the
stream task, the exchange and how a stream ends are in
:mod:`wstrio._io.http.h2.exchange`.  The connection window is opened to
``2 x streams x window`` at the start, so streams stalled on their own
windows never block the others.

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
request).  A header block (HEADERS and its CONTINUATION frames, which
nothing may interleave) must end within ``max-request-head-time`` of its
first byte, or the connection is closed (GOAWAY): slowloris on HTTP/2.
Streams have their own timeouts: ``max-read-idle`` in the tunnel
and for request bodies, ``max-write-idle`` for each send (lighttpd times h2
connections out only as a whole).
"""

from __future__ import annotations

import logging
import math
from typing import final

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes
from hyperframe.frame import ContinuationFrame, GoAwayFrame, HeadersFrame

from wstrio._config import ServerConfig
from wstrio._io.grace import grace_scope
from wstrio._io.http.exchange import Dispatch
from wstrio._io.http.h2.exchange import FINISH_TIMEOUT, run_stream
from wstrio._io.http.h2.stream import H2StreamState
from wstrio._io.streams.pipes import BROKEN, READ_SIZE
from wstrio._sansio.http.h2budget import H2Budget

__all__ = ["PREFACE", "H2Connection", "read_preface", "serve_h2"]

log = logging.getLogger("wstrio.connection")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""The client connection preface; a cleartext connection starting with it is h2c."""


_HIGH_WATER = 256 << 10
"""Bytes waiting for the writer above which senders (and the reader) wait for it.

Below it a send returns as soon as its frames are queued, as a socket's
send returns once the kernel has the bytes: a stream task is then rarely
inside a send when it is cancelled, so a tunnel can still say CLOSE 1001."""
_FINAL_FLUSH_TIMEOUT = 2.0
"""Bound on writing the last GOAWAY when the connection ends."""
_MAX_WINDOW = (1 << 31) - 1
_DEFAULT_WINDOW = 65535


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
class H2Connection:
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
        self.budget = H2Budget(now=trio.current_time())
        """Control-frame floods: what the client may cost us without asking for anything."""
        self._provoked = False
        """h2's output now answers the client's frames just received (its RST_STREAMs are charged)."""
        self.streams: dict[int, H2StreamState] = {}
        self.tasks = 0
        self._no_tasks = trio.Event()
        self.served = 0
        self.nursery: trio.Nursery | None = None
        self.io_scope = trio.CancelScope(shield=True)
        self.read_scope: trio.CancelScope | None = None
        self.idle_since = trio.current_time()
        self.header_block_since: float | None = None
        """When the header block now being received started (None: none is open)."""
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
            self.budget.sent(data, trio.current_time(), provoked=self._provoked)
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
        if self.header_block_since is not None:
            limit = self.header_block_since + (self.config.max_request_head_time or math.inf)
            self.read_scope.deadline = min(self.read_scope.deadline, limit)

    def _header_block_open(self) -> bool:
        """Whether h2 holds part of a header block: HEADERS without END_HEADERS, or a partial HEADERS frame."""
        # h2 keeps these private: its FrameBuffer emits nothing until
        # END_HEADERS, and bounds only the number of CONTINUATION frames.
        buffer = self.h2.incoming_buffer
        if buffer._headers_buffer:
            return True
        data = buffer._data
        return len(data) >= 4 and data[3] in (HeadersFrame.type, ContinuationFrame.type)

    def _header_block_deadline_passed(self) -> bool:
        limit = self.config.max_request_head_time
        if self.header_block_since is None or limit <= 0:
            return False
        return trio.current_time() >= self.header_block_since + limit

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
                    # The idle deadline passed with no stream open, or a
                    # header block's; close() sends the GOAWAY.
                    if self._header_block_deadline_passed():
                        log.info("%s: an HTTP/2 header block took more than max-request-head-time", self.peer)
                        return
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
        """Feed ``data`` to h2 and handle the events; False when the connection is over.

        The flood budget sees the frames first: the frame that exhausts it
        and everything after it never reach h2 (so h2 answers no more PINGs
        or SETTINGS than the budget allows), and the connection ends with
        GOAWAY ENHANCE_YOUR_CALM.
        """
        self._pull()  # what the streams queued is not an answer to these frames
        allowed = self.budget.received(data, trio.current_time())
        if allowed < len(data):
            if allowed:
                self._receive_allowed(data[:allowed])
            return self._calm()
        go_on = self._receive_allowed(data)
        if self.budget.exhausted is not None:
            return self._calm()
        return go_on

    def _calm(self) -> bool:
        """The budget is spent: GOAWAY ENHANCE_YOUR_CALM, stop reading, end every stream."""
        if not self.goaway_sent and not self.broken:
            log.info(
                "%s: HTTP/2 flood (%s): GOAWAY ENHANCE_YOUR_CALM, closing the connection",
                self.peer,
                self.budget.exhausted,
            )
            try:
                self.h2.close_connection(error_code=ErrorCodes.ENHANCE_YOUR_CALM)
            except h2.exceptions.H2Error:
                pass
            self.goaway_sent = True
        self.kick()
        self.fail_streams()
        return False

    def _receive_allowed(self, data: bytes | bytearray) -> bool:
        self._provoked = True
        try:
            return self._receive_frames(data)
        finally:
            self.kick()
            self._provoked = False

    def _receive_frames(self, data: bytes | bytearray) -> bool:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued a GOAWAY with the error code; send it, then stop.
            log.info("%s: HTTP/2 protocol error: %s", self.peer, exc)
            self.goaway_sent = True
            self.kick()
            self.fail_streams()
            return False
        if not self._header_block_open():
            self.header_block_since = None
        elif self.header_block_since is None:
            self.header_block_since = trio.current_time()
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
                    if not st.local_ended:
                        # Reset while wstrio still worked on it (CVE-2023-44487).
                        self.budget.rapid_reset(trio.current_time())
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
        st = H2StreamState(self, stream_id)
        if event.stream_ended is not None:
            st.peer_ended = True
        self.streams[stream_id] = st
        self.tasks += 1
        self._update_idle_deadline()
        self.nursery.start_soon(run_stream, self, st, tuple(event.headers or ()))

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

    # -- used by the streams ----------------------------------------------------

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

    def forget(self, st: H2StreamState) -> None:
        """The stream's task is over: stop tracking it."""
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
            with trio.move_on_after(self.config.shutdown_timeout + FINISH_TIMEOUT):
                await self.wait_no_tasks()
        # Whatever is left (or everything, when the connection ended by
        # itself) is cut now.
        self.fail_streams()
        with trio.move_on_after(FINISH_TIMEOUT):
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
        dispatch: called with each stream's :class:`~wstrio._io.http.h2.exchange.H2Exchange`, in its own task.
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
    conn = H2Connection(stream, config, dispatch, scheme=scheme, client=client, server=server)
    async with trio.open_nursery() as nursery:
        conn.nursery = nursery
        await nursery.start(conn.run_io, initial)
        cancelled = True
        try:
            await conn.done.wait()
            cancelled = False
        finally:
            # Bounded in close(); shielded so a shutdown can still say goodbye.
            with grace_scope(config.shutdown_timeout + 3 * FINISH_TIMEOUT):
                await conn.close(shutdown=cancelled)
            conn.io_scope.cancel()
