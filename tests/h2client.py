"""A small HTTP/2 test client on h2 and a Trio stream, with RFC 8441 WebSockets.

* :func:`open_h2_client` connects (cleartext h2c or TLS with ALPN ``h2``) and
  runs the client's reader in a nursery; it yields an :class:`H2Client`.
* :meth:`H2Client.request` / :meth:`H2Client.get` do ordinary requests.
* :meth:`H2Client.websocket` does an extended CONNECT and returns an
  :class:`H2WebSocket`, which frames messages with a wsproto *client*
  connection (masking, close handshake) over the stream's DATA frames.

Flow control is explicit so tests can starve a stream: with ``auto_ack``
off for a stream, received DATA is not acknowledged until :meth:`H2Stream.ack`
(the server's window for that stream then runs out).  The connection window
is opened wide at the start, as browsers do, so one starved stream does not
stall the connection's other streams on *our* side.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import h2.config
import h2.connection
import h2.events
import h2.settings
import trio
from h2.errors import ErrorCodes
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage

Headers = Sequence[tuple[bytes, bytes]]


class _GracefulGoAway(h2.connection.H2ConnectionStateMachine):
    """h2's state machine, except that a received GOAWAY leaves the connection open.

    h2 closes its connection state machine on a received GOAWAY and then
    refuses the rest of the streams' frames (python-hyper/h2#1181), so it
    could not watch a graceful shutdown; browsers and nghttp2 finish the
    streams up to the GOAWAY's last stream id, and so does this test client.
    """

    def __init__(self) -> None:
        super().__init__()
        self._transitions = {
            **self._transitions,
            (h2.connection.ConnectionState.CLIENT_OPEN, h2.connection.ConnectionInputs.RECV_GOAWAY): (
                None,
                h2.connection.ConnectionState.CLIENT_OPEN,
            ),
        }


class StreamReset(Exception):
    """The server reset the stream."""

    def __init__(self, code: int) -> None:
        try:
            name = ErrorCodes(code).name
        except ValueError:
            name = str(code)
        super().__init__(f"stream reset by the server: {name}")
        self.code = code


class H2Stream:
    """One client stream: response headers, received data, end and reset."""

    def __init__(self, client: H2Client, stream_id: int, *, auto_ack: bool) -> None:
        self.client = client
        self.stream_id = stream_id
        self.auto_ack = auto_ack
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.status: int | None = None
        self.buffer = bytearray()
        self.unacked = 0
        self.ended = False
        self.reset_code: int | None = None
        self.changed = trio.Event()
        self.received_total = 0

    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def _wait(self) -> None:
        await self.changed.wait()

    async def response_headers(self) -> int:
        """Wait for the response headers; returns the status."""
        while self.status is None:
            if self.reset_code is not None:
                raise StreamReset(self.reset_code)
            if self.client.closed:
                raise trio.BrokenResourceError("connection closed")
            await self._wait()
        return self.status

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers or ():
            if k == name:
                return v
        return None

    async def receive(self) -> bytes:
        """The data received so far (waiting for some); ``b""`` at END_STREAM."""
        while not self.buffer:
            if self.ended:
                return b""
            if self.reset_code is not None:
                raise StreamReset(self.reset_code)
            if self.client.closed:
                raise trio.BrokenResourceError("connection closed")
            await self._wait()
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    async def read_all(self) -> bytes:
        """Everything until END_STREAM."""
        out = bytearray()
        while chunk := await self.receive():
            out += chunk
        return bytes(out)

    async def ack(self, n: int | None = None) -> None:
        """Acknowledge ``n`` (default: all) received bytes, opening the server's window."""
        n = self.unacked if n is None else n
        if n:
            self.unacked -= n
            self.client.conn.acknowledge_received_data(n, self.stream_id)
            await self.client.flush()

    async def wait_received(self, total: int) -> None:
        """Wait until ``total`` bytes have arrived on this stream."""
        while self.received_total < total:
            if self.client.closed or self.reset_code is not None:
                raise trio.BrokenResourceError("stream gone")
            await self._wait()

    async def send(self, data: bytes, *, end_stream: bool = False) -> None:
        """Send DATA within the server's windows."""
        await self.client.send_data(self.stream_id, data, end_stream=end_stream)

    async def end(self) -> None:
        """Send END_STREAM (a half-close)."""
        self.client.conn.end_stream(self.stream_id)
        await self.client.flush()

    async def reset(self, code: ErrorCodes = ErrorCodes.CANCEL) -> None:
        """Send RST_STREAM."""
        self.client.conn.reset_stream(self.stream_id, code)
        await self.client.flush()

    def send_window(self) -> int:
        return self.client.conn.local_flow_control_window(self.stream_id)


class H2WebSocket:
    """A WebSocket on an HTTP/2 stream, framed by a wsproto client connection."""

    def __init__(self, stream: H2Stream) -> None:
        self.stream = stream
        self.ws = Connection(ConnectionType.CLIENT)
        self.closed: CloseConnection | None = None

    async def send_text(self, text: str) -> None:
        await self.stream.send(self.ws.send(Message(data=text)))

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send(self.ws.send(Message(data=data)))

    async def receive_message(self) -> str | bytes:
        """The next whole message (PINGs are answered); raises EOFError on CLOSE or end."""
        text_parts: list[str] = []
        byte_parts: list[bytes] = []
        while True:
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    text_parts.append(event.data)
                    if event.message_finished:
                        return "".join(text_parts)
                elif isinstance(event, BytesMessage):
                    byte_parts.append(bytes(event.data))
                    if event.message_finished:
                        return b"".join(byte_parts)
                elif isinstance(event, Ping):
                    await self.stream.send(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self.closed = event
                    raise EOFError(f"CLOSE {event.code} {event.reason!r}")
            data = await self.stream.receive()
            if not data:
                raise EOFError("END_STREAM without CLOSE")
            self.ws.receive_data(data)

    async def close(self, code: int = 1000) -> CloseConnection:
        """Send CLOSE and wait for the server's."""
        await self.stream.send(self.ws.send(CloseConnection(code=code)))
        while self.closed is None:
            try:
                await self.receive_message()
            except EOFError:
                break
        assert self.closed is not None
        return self.closed


class H2Client:
    """An HTTP/2 client connection (see :func:`open_h2_client`)."""

    def __init__(self, transport: trio.abc.Stream, *, connection_window: int) -> None:
        self.transport = transport
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.state_machine = _GracefulGoAway()
        self.conn.initiate_connection()
        if connection_window > 65535:
            self.conn.increment_flow_control_window(connection_window - 65535)
        self.streams: dict[int, H2Stream] = {}
        self.settings_received = trio.Event()
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.goaway_event = trio.Event()
        self.closed = False
        self.closed_event = trio.Event()
        self.windows = trio.Event()
        self.events: list[h2.events.Event] = []
        self._lock = trio.Lock()

    async def flush(self) -> None:
        async with self._lock:
            data = self.conn.data_to_send()
            if data:
                await self.transport.send_all(data)

    async def send_raw(self, data: bytes) -> None:
        """Write bytes h2 did not make (broken frames, for tests of the server's errors)."""
        async with self._lock:
            await self.transport.send_all(self.conn.data_to_send() + data)

    @property
    def remote_settings(self) -> h2.settings.Settings:
        return self.conn.remote_settings

    async def read_loop(self) -> None:
        try:
            while True:
                try:
                    data = await self.transport.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    return
                for event in self.conn.receive_data(data):
                    self.events.append(event)
                    self._handle(event)
                try:
                    await self.flush()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
        finally:
            self.closed = True
            self.closed_event.set()
            for st in self.streams.values():
                st._wake()
            self.windows.set()

    def _handle(self, event: h2.events.Event) -> None:
        st = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.settings_received.set()
            self._windows_changed()
        elif isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)) and st is not None:
            if isinstance(event, h2.events.ResponseReceived):
                st.headers = list(event.headers or ())
                st.status = int(dict(st.headers)[b":status"])
            st._wake()
        elif isinstance(event, h2.events.DataReceived) and st is not None:
            data = event.data or b""
            st.buffer += data
            st.received_total += len(data)
            n = event.flow_controlled_length or 0
            if st.auto_ack:
                self.conn.acknowledge_received_data(n, st.stream_id)
            else:
                st.unacked += n
            st._wake()
        elif isinstance(event, h2.events.StreamEnded) and st is not None:
            st.ended = True
            st._wake()
        elif isinstance(event, h2.events.StreamReset) and st is not None:
            st.reset_code = int(event.error_code or 0)
            st._wake()
            self._windows_changed()
        elif isinstance(event, h2.events.WindowUpdated):
            self._windows_changed()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
            self.goaway_event.set()
            for s in self.streams.values():
                s._wake()

    def _windows_changed(self) -> None:
        self.windows.set()
        self.windows = trio.Event()

    async def send_data(self, stream_id: int, data: bytes, *, end_stream: bool = False) -> None:
        view = memoryview(data)
        while view:
            st = self.streams[stream_id]
            if st.reset_code is not None:
                raise StreamReset(st.reset_code)
            if self.closed:
                raise trio.BrokenResourceError("connection closed")
            window = self.conn.local_flow_control_window(stream_id)
            if window <= 0:
                await self.windows.wait()
                continue
            n = min(len(view), window, self.conn.max_outbound_frame_size)
            self.conn.send_data(stream_id, bytes(view[:n]))
            view = view[n:]
            await self.flush()
        if end_stream:
            self.conn.end_stream(stream_id)
            await self.flush()

    def _open(self, headers: Headers, *, end_stream: bool, auto_ack: bool) -> H2Stream:
        stream_id = self.conn.get_next_available_stream_id()
        st = H2Stream(self, stream_id, auto_ack=auto_ack)
        self.streams[stream_id] = st
        self.conn.send_headers(stream_id, list(headers), end_stream=end_stream)
        return st

    async def request(
        self,
        method: str,
        path: str,
        headers: Headers = (),
        body: bytes = b"",
        *,
        authority: str = "localhost",
        scheme: str = "https",
        auto_ack: bool = True,
        raw: Headers | None = None,
        end_stream: bool | None = None,
    ) -> H2Stream:
        """Send a request (``raw`` replaces the whole header block, unvalidated).

        Without ``body`` the stream ends with the headers unless ``end_stream=False``.
        """
        if raw is None:
            block = [
                (b":method", method.encode()),
                (b":scheme", scheme.encode()),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
                *headers,
            ]
        else:
            block = list(raw)
        st = self._open(block, end_stream=not body if end_stream is None else end_stream, auto_ack=auto_ack)
        await self.flush()
        if body:
            await self.send_data(st.stream_id, body, end_stream=True)
        return st

    async def get(self, path: str, headers: Headers = (), **kwargs: object) -> tuple[int, H2Stream, bytes]:
        """GET ``path``; returns (status, stream, body)."""
        st = await self.request("GET", path, headers, **kwargs)  # type: ignore[arg-type]
        status = await st.response_headers()
        return status, st, await st.read_all()

    async def open_websocket_stream(
        self,
        path: str,
        headers: Headers = (),
        *,
        authority: str = "localhost",
        scheme: str = "https",
        protocol: bytes = b"websocket",
        auto_ack: bool = True,
    ) -> H2Stream:
        """Send an extended CONNECT (waits for the server's SETTINGS first); returns the stream."""
        await self.settings_received.wait()
        block = [
            (b":method", b"CONNECT"),
            (b":protocol", protocol),
            (b":scheme", scheme.encode()),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            (b"sec-websocket-version", b"13"),
            *headers,
        ]
        st = self._open(block, end_stream=False, auto_ack=auto_ack)
        await self.flush()
        return st

    async def websocket(self, path: str, headers: Headers = (), **kwargs: object) -> H2WebSocket:
        """An accepted WebSocket on ``path`` (asserts ``:status 200``)."""
        st = await self.open_websocket_stream(path, headers, **kwargs)  # type: ignore[arg-type]
        status = await st.response_headers()
        if status != 200:
            body = await st.read_all()
            raise AssertionError(f"extended CONNECT got {status}: {body!r}")
        return H2WebSocket(st)

    async def ping(self) -> None:
        """A PING round trip (everything sent before it has been processed by then)."""
        self.conn.ping(b"12345678")
        await self.flush()
        while not any(isinstance(e, h2.events.PingAckReceived) for e in self.events):
            if self.closed:
                raise trio.BrokenResourceError("connection closed")
            await trio.sleep(0.01)
        self.events = [e for e in self.events if not isinstance(e, h2.events.PingAckReceived)]


@asynccontextmanager
async def run_h2_client(transport: trio.abc.Stream, *, connection_window: int = 16 << 20) -> AsyncIterator[H2Client]:
    """An :class:`H2Client` on an open ``transport`` (e.g. a memory stream); closes it afterwards."""
    client = H2Client(transport, connection_window=connection_window)
    async with transport, trio.open_nursery() as nursery:
        await client.flush()
        nursery.start_soon(client.read_loop)
        try:
            yield client
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_h2_client(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str = "localhost",
    connection_window: int = 16 << 20,
) -> AsyncIterator[H2Client]:
    """Connect and yield an :class:`H2Client` (h2c without ``ssl_context``)."""
    transport: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    if ssl_context is not None:
        tls = trio.SSLStream(transport, ssl_context, server_hostname=server_hostname)
        await tls.do_handshake()
        assert tls.selected_alpn_protocol() == "h2", tls.selected_alpn_protocol()
        transport = tls
    async with run_h2_client(transport, connection_window=connection_window) as client:
        yield client


def client_ssl_context(ca: object) -> ssl.SSLContext:
    """A client context trusting a trustme CA, offering ``h2`` and ``http/1.1``."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)  # type: ignore[attr-defined]
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx
