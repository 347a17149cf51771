"""A small Trio WebSocket client for tests (wsproto over a Trio stream).

It is meant for asserting on what a server sends: whole messages, pings and
the close code, with no background tasks.  Every receive has a timeout so a
broken server fails a test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Sequence
from typing import final
from urllib.parse import urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

__all__ = ["ConnectionRejected", "WebSocketClient", "open_websocket", "open_websocket_stream"]

Message = str | bytes


class ConnectionRejected(Exception):
    """The server answered the handshake with an HTTP status other than 101."""

    def __init__(self, status_code: int, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> None:
        super().__init__(f"WebSocket handshake rejected with HTTP {status_code}")
        self.status_code = status_code
        self.headers = tuple(headers)
        self.body = body


@final
class WebSocketClient:
    """An open client connection; see :func:`open_websocket`."""

    def __init__(self, stream: trio.abc.Stream, ws: WSConnection, timeout: float) -> None:
        self._stream = stream
        self._ws = ws
        self.timeout = timeout
        self.subprotocol: str | None = None
        self.response_headers: tuple[tuple[bytes, bytes], ...] = ()
        self.close_code: int | None = None
        """The code of the server's CLOSE, once received."""
        self.close_reason: str | None = None
        self.pongs: list[bytes] = []
        self.pings: list[bytes] = []
        self._text: list[str] = []
        self._bytes: list[bytes] = []
        self._pending: list[Message] = []

    async def _send(self, event: object) -> None:
        await self._stream.send_all(self._ws.send(event))  # type: ignore[arg-type]

    async def send(self, message: Message) -> None:
        """Send one text (``str``) or binary (``bytes``) message."""
        if isinstance(message, str):
            await self._send(TextMessage(data=message))
        else:
            await self._send(BytesMessage(data=message))

    async def ping(self, payload: bytes = b"") -> None:
        """Send a PING (the PONG shows up in :attr:`pongs`)."""
        await self._send(Ping(payload=payload))

    async def _pump(self) -> bool:
        """Read once and process events; False at EOF."""
        data = bytes(await self._stream.receive_some(65536))
        self._ws.receive_data(data or None)
        for event in self._ws.events():
            if isinstance(event, TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    self._pending.append("".join(self._text))
                    self._text = []
            elif isinstance(event, BytesMessage):
                self._bytes.append(bytes(event.data))
                if event.message_finished:
                    self._pending.append(b"".join(self._bytes))
                    self._bytes = []
            elif isinstance(event, Ping):
                self.pings.append(bytes(event.payload))
                await self._send(event.response())
            elif isinstance(event, Pong):
                self.pongs.append(bytes(event.payload))
            elif isinstance(event, CloseConnection):
                if self.close_code is None:
                    self.close_code = event.code
                    self.close_reason = event.reason
                with contextlib.suppress(Exception):
                    await self._send(event.response())
                return False
        return bool(data)

    async def receive(self) -> Message:
        """The next whole message.

        Raises:
            trio.TooSlowError: nothing arrived within :attr:`timeout`.
            EOFError: the server closed (see :attr:`close_code`).
        """
        with trio.fail_after(self.timeout):
            while not self._pending:
                if not await self._pump():
                    if self._pending:
                        break
                    msg = f"the server closed the connection (close code {self.close_code})"
                    raise EOFError(msg)
        return self._pending.pop(0)

    async def wait_closed(self) -> int | None:
        """Read (dropping messages) until the server closes; return its close code.

        Raises:
            trio.TooSlowError: the server did not close within :attr:`timeout`.
        """
        with trio.fail_after(self.timeout):
            while await self._pump():
                pass
        return self.close_code

    async def close(self, code: int = 1000, reason: str = "") -> int | None:
        """Send CLOSE and wait for the server's; return the server's close code."""
        with contextlib.suppress(Exception):
            await self._send(CloseConnection(code=code, reason=reason or None))
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            return await self.wait_closed()
        return self.close_code

    async def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (for protocol-error tests)."""
        await self._stream.send_all(data)


async def _connect_stream(url: str, ssl_context: ssl.SSLContext | None) -> tuple[trio.abc.Stream, str, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        msg = f"expected a ws:// or wss:// URL, not {url!r}"
        raise ValueError(msg)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    if parts.scheme == "wss":
        context = ssl_context or ssl.create_default_context()
        tls = trio.SSLStream(stream, context, server_hostname=host)
        await tls.do_handshake()
        stream = tls
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    authority = parts.netloc.rsplit("@", 1)[-1]
    return stream, authority, target


@contextlib.asynccontextmanager
async def open_websocket(
    url: str,
    *,
    subprotocols: Sequence[str] = (),
    headers: Sequence[tuple[str, str]] = (),
    origin: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109 - bounds each receive of the client, not this call
    unix_socket: str | None = None,
) -> AsyncIterator[WebSocketClient]:
    """Open a WebSocket to ``url`` (``ws://`` or ``wss://``) and close it on exit.

    Args:
        url: where to connect.
        subprotocols: offered in ``Sec-WebSocket-Protocol``.
        headers: extra request headers.
        origin: sent as ``Origin`` when given.
        ssl_context: for ``wss://`` (e.g. trusting a test CA).
        timeout: seconds allowed for the handshake and for each receive.
        unix_socket: connect to this unix socket instead of the URL's host.

    Raises:
        ConnectionRejected: the server did not answer 101 (with its status).
    """
    if unix_socket is not None:
        parts = urlsplit(url)
        stream: trio.abc.Stream = await trio.open_unix_socket(unix_socket)
        authority = parts.netloc or "localhost"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    else:
        with trio.fail_after(timeout):
            stream, authority, target = await _connect_stream(url, ssl_context)
    async with (
        stream,
        open_websocket_stream(
            stream,
            host=authority,
            target=target,
            subprotocols=subprotocols,
            headers=headers,
            origin=origin,
            timeout=timeout,
        ) as client,
    ):
        yield client


@contextlib.asynccontextmanager
async def open_websocket_stream(
    stream: trio.abc.Stream,
    *,
    host: str = "localhost",
    target: str = "/",
    subprotocols: Sequence[str] = (),
    headers: Sequence[tuple[str, str]] = (),
    origin: str | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109 - bounds each receive of the client, not this call
) -> AsyncIterator[WebSocketClient]:
    """Do the client handshake on an open ``stream`` (e.g. from a :class:`MemoryListener`).

    The stream is not closed on exit; the WebSocket is.

    Raises:
        ConnectionRejected: the server did not answer 101 (with its status).
    """
    ws = WSConnection(ConnectionType.CLIENT)
    extra = [(k.encode(), v.encode()) for k, v in headers]
    if origin is not None:
        extra.append((b"origin", origin.encode()))
    client = WebSocketClient(stream, ws, timeout)
    await client._send(Request(host=host, target=target, subprotocols=list(subprotocols), extra_headers=extra))
    with trio.fail_after(timeout):
        accepted = False
        status = 0
        rejected_headers: list[tuple[bytes, bytes]] = []
        body = b""
        while not accepted:
            data = bytes(await stream.receive_some(65536))
            ws.receive_data(data or None)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    accepted = True
                    client.subprotocol = event.subprotocol
                    client.response_headers = tuple(event.extra_headers)
                elif isinstance(event, RejectConnection):
                    status = event.status_code
                    rejected_headers = list(event.headers)
                    if not event.has_body:
                        raise ConnectionRejected(status, rejected_headers, b"")
                elif isinstance(event, RejectData):
                    body += bytes(event.data)
                    if event.body_finished:
                        raise ConnectionRejected(status, rejected_headers, body)
            if not data and not accepted:
                raise ConnectionRejected(status, rejected_headers, body)
    try:
        yield client
    finally:
        if client.close_code is None:
            with trio.move_on_after(1, shield=True):
                await client.close()
