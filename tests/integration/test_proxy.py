"""The proxy handler end to end: real sockets, real backends, real clients.

Backends: a small h11 server written here (:func:`http_app`: echo, info,
statuses, garbage, silence), raw byte backends for upgrades, a second wstrio
(wstunnel) and the ``websockets`` sync server.  Clients: :class:`HttpClient`
(h11 over a blocking socket, in a worker thread, so it cannot share our event
loop), the ``websockets`` sync client, :class:`tests.helpers.RawClient` for
byte-exact requests, and headless Chromium for the seed's two-server example.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import h11
import pytest
import trio
import trio.testing
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.sync.server import ServerConnection
from websockets.sync.server import serve as ws_serve
from wsproto import events as wsevents
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionType
from wsproto.utilities import generate_accept_token

import wstrio
from tests.helpers import (
    RawClient,
    echo_route,
    make_config,
    serve_echo_tcp,
    serve_tcp_backend,
    start_server,
    unused_tcp_port,
    ws_client,
    ws_connect,
    ws_receive_bytes,
)
from wstrio._io.backends.connect import SocketConnector
from wstrio._io.context import RouteMatch, ServerContext
from wstrio._io.handlers.proxy import handle as handle_proxy
from wstrio._io.http.exchange import Upgraded
from wstrio._sansio.http.request import Request

MiB = 1 << 20
BLOCK = bytes(range(256)) * 256  # 64 KiB
CLIENT_TIMEOUT = 30.0
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# Every tunnel and relay runs with the hub on and off (issue 13, defect 7).
pytestmark = pytest.mark.usefixtures("hub_switch")


def pattern(size: int) -> Iterator[bytes]:
    """``size`` deterministic bytes, in 64 KiB blocks."""
    while size > 0:
        chunk = BLOCK[: min(size, len(BLOCK))]
        size -= len(chunk)
        yield chunk


def pattern_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for chunk in pattern(size):
        digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------
# The HTTP backend (trio + h11)
# --------------------------------------------------------------------------


async def drain(stream: trio.abc.ReceiveStream) -> None:
    """Read until EOF (or a reset)."""
    try:
        while await stream.receive_some(65536):
            pass
    except trio.BrokenResourceError:
        pass


async def http_app(stream: trio.SocketStream, *, name: str = "a") -> None:
    """One request per connection; see :func:`_http_app`.  The proxy going away is fine."""
    try:
        await _http_app(stream, name)
    except (trio.BrokenResourceError, h11.ProtocolError):
        pass


async def _http_app(stream: trio.SocketStream, name: str) -> None:
    """One request per connection; what it does depends on the path.

    ``/info`` reads the body and answers JSON (method, target, headers, body
    size and SHA-256) with some hop-by-hop response headers; ``/echo``
    streams the body back while it arrives; ``/big?n=N`` sends N bytes;
    ``/status/N`` answers N; ``/garbage``, ``/hangup``, ``/silent``,
    ``/stall``, ``/truncated`` misbehave; ``/early-413`` answers before reading
    the body; ``/continue`` sends a ``100 Continue`` first.
    """
    h = h11.Connection(h11.SERVER)

    async def next_event() -> h11.Event:
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                h.receive_data(await stream.receive_some(65536))
                continue
            assert isinstance(event, h11.Event), event
            return event

    async def send(*events: h11.Event) -> None:
        await stream.send_all(b"".join(h.send(e) or b"" for e in events))

    try:
        request = await next_event()
    except (h11.RemoteProtocolError, trio.BrokenResourceError):
        return
    if not isinstance(request, h11.Request):
        return
    path, _, query = request.target.partition(b"?")
    if path == b"/info":
        digest = hashlib.sha256()
        size = 0
        while isinstance(event := await next_event(), h11.Data):
            digest.update(event.data)
            size += len(event.data)
        body = json.dumps(
            {
                "backend": name,
                "method": request.method.decode(),
                "target": request.target.decode(),
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers],
                "size": size,
                "sha256": digest.hexdigest(),
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close, x-private"),
            (b"x-private", b"secret"),
            (b"keep-alive", b"timeout=5"),
            (b"x-custom", b"yes"),
            (b"set-cookie", b"a=1"),
            (b"set-cookie", b"b=2"),
            (b"server", b"test-backend"),
            (b"x-backend", name.encode()),
        ]
        await send(h11.Response(status_code=200, headers=headers), h11.Data(data=body), h11.EndOfMessage())
    elif path == b"/echo":
        headers = [(b"content-type", b"application/octet-stream")]
        length = dict(request.headers).get(b"content-length")
        if length is not None:
            headers.append((b"content-length", length))  # else h11 chunks the answer
        await send(h11.Response(status_code=200, headers=headers))
        while isinstance(event := await next_event(), h11.Data):
            await send(h11.Data(data=event.data))
        await send(h11.EndOfMessage())
    elif path == b"/big":
        size = int(query.partition(b"=")[2])
        await send(h11.Response(status_code=200, headers=[(b"content-length", str(size).encode())]))
        if request.method != b"HEAD":
            for chunk in pattern(size):
                await send(h11.Data(data=chunk))
        await send(h11.EndOfMessage())
    elif path.startswith(b"/status/"):
        status = int(path.rpartition(b"/")[2])
        body = b"" if status in (204, 304) else b"status %d\n" % status
        headers = [(b"x-status", str(status).encode())]
        if body:
            headers.append((b"content-length", str(len(body)).encode()))
        data = [h11.Data(data=body)] if body else []
        await send(h11.Response(status_code=status, headers=headers), *data, h11.EndOfMessage())
    elif path == b"/continue":
        await send(h11.InformationalResponse(status_code=100, headers=[]))
        size = 0
        while isinstance(event := await next_event(), h11.Data):
            size += len(event.data)
        body = b"continued after %d bytes" % size
        headers = [(b"content-length", str(len(body)).encode())]
        await send(h11.Response(status_code=200, headers=headers), h11.Data(data=body), h11.EndOfMessage())
    elif path == b"/garbage":
        await stream.send_all(b"SPAM SPAM SPAM\r\n\r\n")
    elif path == b"/hangup":
        return
    elif path == b"/silent":
        await drain(stream)  # until the proxy gives up and closes
    elif path == b"/stall":
        await trio.sleep_forever()  # reads nothing: writes to it stall
    elif path == b"/truncated":
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
    elif path == b"/early-413":
        await send(h11.Response(status_code=413, headers=[(b"content-length", b"0")]), h11.EndOfMessage())
        # Half-close and read on: closing with unread data would reset the
        # connection, which could destroy the answer in flight.
        await stream.send_eof()
        await drain(stream)


async def serve_http_backend(nursery: trio.Nursery, name: str = "a") -> int:
    """:func:`http_app` on 127.0.0.1; returns its port."""
    return await serve_tcp_backend(nursery, functools.partial(http_app, name=name))


async def proxy_to(
    nursery: trio.Nursery, *ports: int, backend: dict[str, Any] | None = None, **route: Any
) -> wstrio.Server:
    """wstrio with one proxy route ``/`` to 127.0.0.1:``ports``."""
    backends = [{"host": "127.0.0.1", "port": port, **(backend or {})} for port in ports]
    return await start_server(nursery, {"route": [{"path": "/", "handler": "proxy", "backend": backends, **route}]})


# --------------------------------------------------------------------------
# The HTTP client (blocking, for a worker thread)
# --------------------------------------------------------------------------


@attrs.frozen
class Reply:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def values(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k == name]

    def header(self, name: bytes) -> bytes | None:
        found = self.values(name)
        return found[0] if found else None

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


def received_headers(info: Any) -> dict[str, list[str]]:
    """The headers an ``/info`` answer reports, name -> values."""
    out: dict[str, list[str]] = {}
    for name, value in info["headers"]:
        out.setdefault(name, []).append(value)
    return out


class HttpClient:
    """A blocking HTTP/1.1 client: h11 over one socket (keep-alive across requests)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT)
        self.h = h11.Connection(h11.CLIENT)

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    @property
    def reusable(self) -> bool:
        """True if the server kept the connection open for another request."""
        return self.h.our_state is h11.DONE and self.h.their_state is h11.DONE

    def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]] = (),
        *,
        body: bytes | None = None,
        stream: Iterable[bytes] | None = None,
        length: int | None = None,
    ) -> Reply:
        """Send a request and read the whole response.

        ``body`` is sent through h11.  ``stream`` is sent from a second
        thread with ``length`` (Content-Length) or chunked, so the response
        is read while the body still goes out (an echo needs that); the
        connection is then good for this request only.
        """
        h = self.h
        if self.reusable:
            h.start_next_cycle()
        all_headers = [("Host", "proxy.test"), *headers]
        if body is not None:
            all_headers.append(("Content-Length", str(len(body))))
        elif stream is not None:
            all_headers.append(
                ("Content-Length", str(length)) if length is not None else ("Transfer-Encoding", "chunked")
            )
        self.sock.sendall(h.send(h11.Request(method=method, target=target, headers=all_headers)) or b"")
        sender = None
        if stream is not None:
            sender = threading.Thread(target=self._send_raw, args=(stream, length is None), daemon=True)
            sender.start()
        else:
            data = h.send(h11.Data(data=body)) or b"" if body else b""
            self.sock.sendall(data + (h.send(h11.EndOfMessage()) or b""))
        try:
            return self._read_response()
        finally:
            if sender is not None:
                sender.join(CLIENT_TIMEOUT)

    def _send_raw(self, stream: Iterable[bytes], chunked: bool) -> None:
        try:
            for chunk in stream:
                self.sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            if chunked:
                self.sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server stopped reading (an early answer)

    def _read_response(self) -> Reply:
        status = 0
        headers: tuple[tuple[bytes, bytes], ...] = ()
        body = bytearray()
        while True:
            event = self.h.next_event()
            if event is h11.NEED_DATA:
                self.h.receive_data(self.sock.recv(1 << 18))
            elif isinstance(event, h11.Response):
                status, headers = event.status_code, tuple(event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return Reply(status, headers, bytes(body))
            elif not isinstance(event, h11.InformationalResponse):
                msg = f"unexpected {event!r}"
                raise AssertionError(msg)


async def fetch(port: int, method: str, target: str, **kwargs: Any) -> Reply:
    """One request on a new connection, from a worker thread."""

    def run() -> Reply:
        with HttpClient(port) as client:
            return client.request(method, target, **kwargs)

    return await ws_client(run)


# --------------------------------------------------------------------------
# Plain HTTP
# --------------------------------------------------------------------------


async def test_get_passes_status_headers_and_body_and_strips_hop_by_hop(nursery: trio.Nursery) -> None:
    proxy = await proxy_to(nursery, await serve_http_backend(nursery))
    reply = await fetch(
        proxy.port,
        "GET",
        "/info?x=1&y=%2F",
        headers=[
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "dropped"),
            ("Keep-Alive", "300"),
            ("TE", "trailers"),
            ("Proxy", "http://evil.example"),
            ("Proxy-Connection", "keep-alive"),
            ("X-End-To-End", "kept"),
            ("X-Forwarded-Proto", "https"),  # a client's claim is not passed on
        ],
    )
    assert reply.status == 200
    # Response: end-to-end fields pass, hop-by-hop ones (and those the
    # backend's Connection names) do not; Server and Date are wstrio's.
    assert reply.header(b"x-custom") == b"yes"
    assert reply.values(b"set-cookie") == [b"a=1", b"b=2"]
    assert reply.header(b"x-private") is None
    assert reply.header(b"keep-alive") is None
    assert (reply.header(b"server") or b"").startswith(b"wstrio/")
    assert len(reply.values(b"date")) == 1
    # Request: what the backend saw.
    info = reply.json()
    assert info["method"] == "GET"
    assert info["target"] == "/info?x=1&y=%2F"
    seen = received_headers(info)
    assert seen["host"] == ["proxy.test"]
    assert seen["x-end-to-end"] == ["kept"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-host"] == ["proxy.test"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["connection"] == ["close"]
    for name in ("x-hop", "keep-alive", "te", "proxy", "proxy-connection", "forwarded"):
        assert name not in seen, name


async def test_head_gets_length_and_no_body(nursery: trio.Nursery) -> None:
    proxy = await proxy_to(nursery, await serve_http_backend(nursery))
    reply = await fetch(proxy.port, "HEAD", f"/big?n={3 * MiB}")
    assert reply.status == 200
    assert reply.header(b"content-length") == str(3 * MiB).encode()
    assert reply.body == b""


@pytest.mark.parametrize("method", ["GET", "DELETE", "OPTIONS", "PATCH", "PUT", "PROPFIND"])
async def test_any_method_is_proxied(nursery: trio.Nursery, method: str) -> None:
    proxy = await proxy_to(nursery, await serve_http_backend(nursery))
    reply = await fetch(proxy.port, method, "/info", body=b"abc" if method in ("PUT", "PATCH") else None)
    assert reply.status == 200
    assert reply.json()["method"] == method


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_large_body_streams_both_ways(nursery: trio.Nursery, framing: str) -> None:
    proxy = await proxy_to(nursery, await serve_http_backend(nursery))
    size = 8 * MiB
    length = size if framing == "content-length" else None
    # The backend echoes while the body still arrives: this only completes
    # if the proxy streams both directions at once.
    reply = await fetch(proxy.port, "POST", "/echo", stream=pattern(size), length=length)
    assert reply.status == 200
    assert len(reply.body) == size
    assert reply.sha256 == pattern_sha256(size)
    if framing == "content-length":
        assert reply.header(b"content-length") == str(size).encode()
    else:
        assert reply.header(b"transfer-encoding") == b"chunked"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_upload_reaches_the_backend_intact(nursery: trio.Nursery, framing: str) -> None:
    proxy = await proxy_to(nursery, await serve_http_backend(nursery))
    size = 5 * MiB + 123
    length = size if framing == "content-length" else None
    info = (await fetch(proxy.port, "POST", "/info", stream=pattern(size), length=length)).json()
    seen = received_headers(info)
    assert (info["size"], info["sha256"]) == (size, pattern_sha256(size))
    if framing == "content-length":
        assert seen["content-length"] == [str(size)]
        assert "transfer-encoding" not in seen
    else:
        assert seen["transfer-encoding"] == ["chunked"]
        assert "content-length" not in seen


async def test_large_download(nursery: trio.Nursery) -> None:
    proxy = await proxy_to(nursery, await serve_http_backend(nursery))
    reply = await fetch(proxy.port, "GET", f"/big?n={9 * MiB + 7}")
    assert reply.status == 200
    assert reply.sha256 == pattern_sha256(9 * MiB + 7)


@pytest.mark.parametrize("status", [201, 204, 301, 304, 404, 418, 500, 503])
async def test_statuses_pass_through(nursery: trio.Nursery, status: int) -> None:
    proxy = await proxy_to(nursery, await serve_http_backend(nursery))
    reply = await fetch(proxy.port, "GET", f"/status/{status}")
    assert reply.status == status
    assert reply.header(b"x-status") == str(status).encode()
    assert reply.body == (b"" if status in (204, 304) else b"status %d\n" % status)


async def test_client_connection_is_kept_alive_across_requests(nursery: trio.Nursery) -> None:
    proxy = await proxy_to(nursery, await serve_http_backend(nursery))

    def run(port: int) -> list[tuple[int, bool]]:
        with HttpClient(port) as client:
            first_socket = client.sock
            out = []
            for method, target, body in [
                ("GET", "/info", None),
                ("POST", "/info", b"x" * 100_000),
                ("GET", "/status/404", None),
                ("GET", f"/big?n={MiB}", None),
            ]:
                reply = client.request(method, target, body=body)
                out.append((reply.status, client.reusable))
            assert client.sock is first_socket
            return out

    assert await ws_client(run, proxy.port) == [(200, True), (200, True), (404, True), (200, True)]
    assert proxy.statistics().connections_total == 1


async def test_backend_down_is_503(nursery: trio.Nursery) -> None:
    proxy = await proxy_to(nursery, unused_tcp_port())
    reply = await fetch(proxy.port, "GET", "/anything")
    assert reply.status == 503


@pytest.mark.parametrize("path", ["/garbage", "/hangup"])
async def test_invalid_backend_response_is_502(nursery: trio.Nursery, path: str) -> None:
    proxy = await proxy_to(nursery, await serve_http_backend(nursery))
    reply = await fetch(proxy.port, "GET", path)
    assert reply.status == 502


async def test_backend_read_timeout_is_504(nursery: trio.Nursery) -> None:
    proxy = await proxy_to(nursery, await serve_http_backend(nursery), backend={"read-timeout": 0.3})
    reply = await fetch(proxy.port, "GET", "/silent")
    assert reply.status == 504


async def test_backend_failure_after_the_response_started_closes_the_connection(nursery: trio.Nursery) -> None:
    proxy = await proxy_to(nursery, await serve_http_backend(nursery))

    def run(port: int) -> str:
        with HttpClient(port) as client, pytest.raises(h11.RemoteProtocolError) as info:
            client.request("GET", "/truncated")
        return str(info.value)

    assert "complete message body" in await ws_client(run, proxy.port)


async def test_backend_answering_before_the_body_is_read(nursery: trio.Nursery) -> None:
    proxy = await proxy_to(nursery, await serve_http_backend(nursery))
    reply = await fetch(proxy.port, "POST", "/early-413", stream=pattern(256 * 1024), length=None)
    assert reply.status == 413


async def test_backend_interim_responses_are_not_passed_on(nursery: trio.Nursery) -> None:
    proxy = await proxy_to(nursery, await serve_http_backend(nursery))
    client = await RawClient.tcp(proxy.port)
    reply = await client.request(
        b"POST /continue HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello"
    )
    assert (reply.status, reply.body) == (200, b"continued after 5 bytes")
    await client.aclose()


async def test_client_leaving_mid_download_is_quiet(nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    proxy = await proxy_to(nursery, await serve_http_backend(nursery))
    client = await RawClient.tcp(proxy.port)
    await client.send(b"GET /big?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (64 * MiB))
    assert (await client.read_head()).status == 200
    await client.read_exactly(MiB)
    await client.aclose()
    # The proxy is unharmed, and nothing was logged as an error.
    assert (await fetch(proxy.port, "GET", "/status/404")).status == 404
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_client_silent_mid_body_is_408(nursery: trio.Nursery) -> None:
    port = await serve_http_backend(nursery)
    route = {"path": "/", "handler": "proxy", "backend": [{"host": "127.0.0.1", "port": port}]}
    proxy = await start_server(nursery, {"server": {"max-read-idle": 0.3}, "route": [route]})
    client = await RawClient.tcp(proxy.port)
    await client.send(b"POST /info HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    assert (await client.read_response()).status == 408
    await client.aclose()


async def test_backend_write_timeout_is_504(nursery: trio.Nursery) -> None:
    proxy = await proxy_to(nursery, await serve_http_backend(nursery), backend={"write-timeout": 0.3})
    # /stall never reads: once the socket buffers are full, the body stalls.
    reply = await fetch(proxy.port, "POST", "/stall", stream=pattern(256 * MiB), length=None)
    assert reply.status == 504


async def test_forwarded_and_replace_http_host(nursery: trio.Nursery) -> None:
    proxy = await proxy_to(
        nursery,
        await serve_http_backend(nursery),
        backend={"label": "app.internal"},
        **{"forwarded": True, "replace-http-host": True},
    )
    info = (await fetch(proxy.port, "GET", "/info")).json()
    seen = received_headers(info)
    assert seen["host"] == ["app.internal"]
    assert seen["x-forwarded-host"] == ["proxy.test"]
    assert seen["forwarded"] == ["for=127.0.0.1;host=proxy.test;proto=http"]


async def test_several_backends_are_balanced(nursery: trio.Nursery) -> None:
    a = await serve_http_backend(nursery, "a")
    b = await serve_http_backend(nursery, "b")
    proxy = await proxy_to(nursery, a, b, balance="round-robin")
    names = [(await fetch(proxy.port, "GET", "/info")).header(b"x-backend") for _ in range(4)]
    assert set(names) == {b"a", b"b"}


async def test_unix_socket_backend(nursery: trio.Nursery, tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(16)
    await nursery.start(trio.serve_listeners, http_app, [trio.SocketListener(sock)])
    proxy = await start_server(
        nursery, {"route": [{"path": "/", "handler": "proxy", "backend": [{"socket": str(path)}]}]}
    )
    reply = await fetch(proxy.port, "GET", "/info")
    assert reply.status == 200, reply
    assert received_headers(reply.json())["host"] == ["proxy.test"]


@pytest.mark.parametrize(
    ("upgrade", "headers"),
    [
        (False, [("Upgrade", "websocket"), ("Connection", "Upgrade")]),
        (True, [("Upgrade", "h2c"), ("Connection", "Upgrade, HTTP2-Settings"), ("HTTP2-Settings", "AAMAAABkAAQAAP__")]),
    ],
    ids=["upgrade-off", "h2c"],
)
async def test_upgrade_header_removed_when_not_passed(
    nursery: trio.Nursery, upgrade: bool, headers: list[tuple[str, str]]
) -> None:
    proxy = await proxy_to(nursery, await serve_http_backend(nursery), upgrade=upgrade)
    reply = await fetch(proxy.port, "GET", "/info", headers=headers)
    assert reply.status == 200
    seen = received_headers(reply.json())
    assert "upgrade" not in seen
    assert "http2-settings" not in seen
    assert seen["connection"] == ["close"]


# --------------------------------------------------------------------------
# Upgrades
# --------------------------------------------------------------------------


@attrs.define
class WsBackend:
    port: int
    closes: list[tuple[int | None, str | None]]
    """(code, reason) of every CLOSE the server received, in order."""
    closed: threading.Semaphore

    def wait_for_closes(self, n: int) -> None:
        """Block (in a worker thread) until ``n`` connections have ended."""
        for _ in range(n):
            assert self.closed.acquire(timeout=CLIENT_TIMEOUT), self.closes


@pytest.fixture
def ws_echo_backend() -> Iterator[WsBackend]:
    """The ``websockets`` sync server (threads) echoing messages whole.

    "please close" makes it close with 4002; the close code and reason it
    received are recorded in ``closes``.
    """
    closes: list[tuple[int | None, str | None]] = []
    closed = threading.Semaphore(0)

    def handler(ws: ServerConnection) -> None:
        try:
            for message in ws:
                if message == "please close":
                    ws.close(4002, "server-bye")
                    break
                ws.send(message)
        except ConnectionClosed:
            pass
        closes.append((ws.close_code, ws.close_reason))
        closed.release()

    server = ws_serve(handler, "127.0.0.1", 0, max_size=None, max_queue=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield WsBackend(server.socket.getsockname()[1], closes, closed)
    finally:
        server.shutdown()
        thread.join(CLIENT_TIMEOUT)


@pytest.mark.slow
async def test_websocket_large_messages_pass_whole(nursery: trio.Nursery, ws_echo_backend: WsBackend) -> None:
    proxy = await proxy_to(nursery, ws_echo_backend.port, upgrade=True)
    binary = os.urandom(8 * MiB)
    text = "héllo wörld ✓ " * (3 * MiB // 16)

    def client(url: str) -> tuple[str, bool, str | None]:
        with ws_connect(url) as ws:
            ws.send(binary)
            got = ws.recv(timeout=CLIENT_TIMEOUT)
            assert isinstance(got, bytes)
            ws.send(text)
            got_text = ws.recv(timeout=CLIENT_TIMEOUT)
            # permessage-deflate is negotiated end to end, through the proxy.
            assert ws.response is not None
            extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
            return hashlib.sha256(got).hexdigest(), got_text == text, extensions

    digest, text_ok, extensions = await ws_client(client, proxy.url("/chat", scheme="ws"))
    assert digest == hashlib.sha256(binary).hexdigest()
    assert text_ok
    assert extensions is not None
    assert "permessage-deflate" in extensions


async def test_websocket_close_codes_pass_through(nursery: trio.Nursery, ws_echo_backend: WsBackend) -> None:
    proxy = await proxy_to(nursery, ws_echo_backend.port, upgrade=True)
    url = proxy.url("/chat", scheme="ws")

    def client_closes() -> str:
        with ws_connect(url) as ws:
            ws.send("hi")
            answer = str(ws.recv(timeout=CLIENT_TIMEOUT))
            ws.close(4001, "bye")
            return answer

    def server_closes() -> tuple[int | None, str | None]:
        with ws_connect(url) as ws:
            ws.send("please close")
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=CLIENT_TIMEOUT)
            rcvd = info.value.rcvd
            return (rcvd.code, rcvd.reason) if rcvd is not None else (None, None)

    assert await ws_client(client_closes) == "hi"
    assert await ws_client(server_closes) == (4002, "server-bye")
    await ws_client(ws_echo_backend.wait_for_closes, 2)
    assert ws_echo_backend.closes[0] == (4001, "bye")


async def test_websocket_to_a_second_wstrio(nursery: trio.Nursery) -> None:
    back = await start_server(
        nursery, {"route": [echo_route(await serve_echo_tcp(nursery), **{"frame-type": "binary"})]}
    )
    proxy = await proxy_to(nursery, back.port, upgrade=True)
    payload = os.urandom(4 * MiB)

    def client(url: str) -> tuple[str, int]:
        with ws_connect(url) as ws:
            ws.send(payload)
            # wstunnel frames every backend read: the echo comes in pieces.
            received = ws_receive_bytes(ws, len(payload), timeout=CLIENT_TIMEOUT)
            data = b"".join(m for m in received if isinstance(m, bytes))
            ws.close()
            return hashlib.sha256(data).hexdigest(), len(data)

    assert await ws_client(client, proxy.url("/ws/", scheme="ws")) == (
        hashlib.sha256(payload).hexdigest(),
        len(payload),
    )


async def test_backend_closing_closes_the_client_connection(nursery: trio.Nursery) -> None:
    async def backend(stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(65536)
        key = re.search(rb"(?im)^sec-websocket-key: *(\S+)", head)
        assert key is not None
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + generate_accept_token(key.group(1)) + b"\r\n\r\n"
            b"\x81\x02hi"  # a text frame, then the TCP connection closes: no CLOSE frame
        )

    proxy = await proxy_to(nursery, await serve_tcp_backend(nursery, backend), upgrade=True)

    def client(url: str) -> tuple[str, bool]:
        with ws_connect(url, compression=None) as ws:
            first = str(ws.recv(timeout=CLIENT_TIMEOUT))
            with pytest.raises(ConnectionClosedError) as info:
                ws.recv(timeout=CLIENT_TIMEOUT)
            return first, info.value.rcvd is None

    assert await ws_client(client, proxy.url("/ws/", scheme="ws")) == ("hi", True)


async def test_websocket_refused_cleanly_when_upgrade_is_off(nursery: trio.Nursery) -> None:
    back = await start_server(nursery, {"route": [echo_route(await serve_echo_tcp(nursery))]})
    proxy = await proxy_to(nursery, back.port)  # upgrade = false

    def client(url: str) -> int:
        with pytest.raises(InvalidStatus) as info:
            ws_connect(url)
        return info.value.response.status_code

    # The backend sees a plain GET (no Upgrade) on its WebSocket route and
    # answers it 426 Upgrade Required; the proxy passes that on, no 101.
    assert await ws_client(client, proxy.url("/ws/", scheme="ws")) == 426


async def test_non_101_answer_to_an_upgrade_passes_as_a_response(nursery: trio.Nursery) -> None:
    back = await start_server(nursery, {"route": [echo_route(await serve_echo_tcp(nursery))]})
    proxy = await proxy_to(nursery, back.port, upgrade=True)
    client = await RawClient.tcp(proxy.port)
    await client.send(
        b"GET /ws/ HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"  # no Sec-WebSocket-Version
    )
    reply = await client.read_response()
    assert reply.status == 400
    assert reply.header(b"sec-websocket-version") == b"13"
    assert reply.header(b"upgrade") is None
    # An ordinary response: the client connection stays usable.
    reply = await client.request(b"GET /nothing-here HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert reply.status == 404
    await client.aclose()


async def test_any_upgrade_token_passes_with_leftovers_and_half_close(nursery: trio.Nursery) -> None:
    heads: list[bytes] = []

    async def backend(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        head, _, data = data.partition(b"\r\n\r\n")
        heads.append(head)
        # Bytes in the same write as the 101 must reach the client first.
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo/1\r\nConnection: Upgrade\r\n\r\nEARLY|"
        )
        while True:
            if data:
                await stream.send_all(data.upper())
            data = await stream.receive_some(65536)
            if not data:
                break
        # The client half-closed; this direction still works.
        await stream.send_all(b"|BYE")

    proxy = await proxy_to(nursery, await serve_tcp_backend(nursery, backend), upgrade=True)
    client = await RawClient.tcp(proxy.port)
    # Bytes right behind the request head go to the backend first.
    await client.send(b"GET /tunnel HTTP/1.1\r\nHost: x\r\nUpgrade: foo/1\r\nConnection: Upgrade\r\n\r\npipelined|")
    head = await client.read_head()
    assert head.status == 101
    assert head.header(b"upgrade") == b"foo/1"
    assert head.header(b"connection") == b"upgrade"
    assert await client.read_exactly(len(b"EARLY|PIPELINED|")) == b"EARLY|PIPELINED|"
    await client.send(b"more")
    assert await client.read_exactly(4) == b"MORE"
    await client.send_eof()
    assert await client.read_to_eof() == b"|BYE"
    await client.aclose()
    (backend_head,) = heads
    assert b"\r\nupgrade: foo/1" in backend_head.lower()
    assert b"\r\nconnection: close, upgrade" in backend_head.lower()


# --------------------------------------------------------------------------
# The seed's two-server example (examples/proxy)
# --------------------------------------------------------------------------


def _on_port_zero(config: wstrio.ServerConfig) -> wstrio.ServerConfig:
    return attrs.evolve(config, listen=(wstrio.ListenAddress("tcp", "127.0.0.1", 0),))


async def start_example_pair(nursery: trio.Nursery, tmp_path: Path) -> wstrio.Server:
    """back.toml (wstunnel + echo.pl) and front.toml (proxy) on free ports; returns the front."""
    back_config = _on_port_zero(wstrio.load_config(EXAMPLES / "proxy" / "back.toml"))
    (route,) = back_config.routes
    (echo,) = route.backends
    # The spawned echo.pl's socket goes to tmp_path, not into examples/.
    route = attrs.evolve(route, backends=(attrs.evolve(echo, socket=tmp_path / "echo.sock"),))
    back = await start_server(nursery, attrs.evolve(back_config, routes=(route,)))
    front_config = _on_port_zero(wstrio.load_config(EXAMPLES / "proxy" / "front.toml"))
    (proxy,) = front_config.routes
    assert (proxy.handler, proxy.upgrade) == ("proxy", True)
    proxy = attrs.evolve(proxy, backends=(attrs.evolve(proxy.backends[0], port=back.port),))
    return await start_server(nursery, attrs.evolve(front_config, routes=(proxy,)))


async def test_seed_example_pair(nursery: trio.Nursery, tmp_path: Path) -> None:
    front = await start_example_pair(nursery, tmp_path)
    page = await fetch(front.port, "GET", "/count.html")
    assert page.status == 200
    assert b"new WebSocket('ws://'+location.host+'/ws/')" in page.body

    def client(url: str) -> list[str]:
        with ws_connect(url) as ws:
            out = []
            for i in range(1, 6):
                ws.send(f"{i}\n")
                out.append(str(ws.recv(timeout=CLIENT_TIMEOUT)))
            return out

    assert await ws_client(client, front.url("/ws/", scheme="ws")) == [f"{i}\n" for i in range(1, 6)]


@pytest.mark.browser
@pytest.mark.slow
async def test_seed_example_pair_in_chromium(nursery: trio.Nursery, tmp_path: Path, chromium: Any) -> None:
    front = await start_example_pair(nursery, tmp_path)
    text = await chromium.page_text(front.url("/count.html"), until="RECV: 5")
    for i in range(1, 6):
        assert f"SEND: {i}" in text
        assert f"RECV: {i}" in text


async def test_malformed_client_body_is_400(nursery: trio.Nursery) -> None:
    proxy = await proxy_to(nursery, await serve_http_backend(nursery))
    client = await RawClient.tcp(proxy.port)
    await client.send(b"POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nnot-a-chunk-size\r\n")
    reply = await client.read_response()
    assert reply.status == 400
    await client.aclose()


# --------------------------------------------------------------------------
# HTTP/2 clients (RFC 8441), through a stand-in for the HTTP/2 exchange
# --------------------------------------------------------------------------


class StandInH2Exchange:
    """An :class:`~wstrio._io.http.exchange.Exchange` for a request on an HTTP/2 stream.

    It records the response and, on upgrade, hands the proxy one end of an
    in-memory stream (``client_end`` is the other): what an h2 stream adapter
    does, without HTTP/2 framing.
    """

    def __init__(self, request: Request, body: Sequence[bytes] = ()) -> None:
        self._request = request
        self._body = list(body)
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.data = bytearray()
        self.ended = False
        self.note = ""
        self.switched = trio.Event()
        self.client_end, self._server_end = trio.testing.memory_stream_pair()

    @property
    def request(self) -> Request:
        return self._request

    @property
    def response_started(self) -> bool:
        return self.status is not None

    async def receive_body(self, max_bytes: int = 65536) -> bytes:
        await trio.lowlevel.checkpoint()
        return self._body.pop(0) if self._body else b""

    async def start_response(self, status: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
        self.status, self.headers = status, list(headers)

    async def send_data(self, data: bytes) -> None:
        self.data += data

    async def end_response(self) -> None:
        self.ended = True

    async def upgrade(self, headers: Sequence[tuple[bytes, bytes]], *, status: int = 101) -> Upgraded:
        self.status, self.headers = status, list(headers)
        self.switched.set()
        return Upgraded(self._server_end)

    def set_log_note(self, note: str) -> None:
        self.note = note

    def set_log_fields(self, **fields: object) -> None:
        pass


def h2_request(port: int, method: bytes = b"CONNECT", path: bytes = b"/chat", **extra: bytes) -> Request:
    headers = [(b":method", method), (b":scheme", b"https"), (b":path", path), (b":authority", b"proxy.test")]
    if method == b"CONNECT":
        headers += [(b":protocol", b"websocket"), (b"sec-websocket-version", b"13")]
    headers += [(name.replace("_", "-").encode(), value) for name, value in extra.items()]
    return Request.from_h2(headers, scheme="https", client=("127.0.0.1", port))


def proxy_route_config(port: int, **route: Any) -> tuple[ServerContext, RouteMatch]:
    config = make_config(
        {"route": [{"path": "/", "handler": "proxy", "backend": [{"host": "127.0.0.1", "port": port}], **route}]}
    )
    context = ServerContext(config, SocketConnector())
    return context, context.matches[0]


async def test_h2_websocket_is_sent_on_as_an_http11_upgrade(nursery: trio.Nursery, ws_echo_backend: WsBackend) -> None:
    context, match = proxy_route_config(ws_echo_backend.port, upgrade=True)
    exchange = StandInH2Exchange(h2_request(1234, sec_websocket_protocol=b"chat"))
    done = trio.Event()

    async def run() -> None:
        await handle_proxy(exchange, match, context)
        done.set()

    nursery.start_soon(run)
    await exchange.switched.wait()
    # RFC 8441: a 200 on the stream, without the HTTP/1.1 handshake headers.
    assert exchange.status == 200
    names = {name for name, _ in exchange.headers}
    assert not names & {b"upgrade", b"connection", b"sec-websocket-accept"}
    # Then WebSocket frames flow over the stream, as in HTTP/2 DATA.
    ws = WsConnection(ConnectionType.CLIENT)
    await exchange.client_end.send_all(ws.send(wsevents.Message(data="hello over h2")))
    received: list[wsevents.Event] = []
    while not any(isinstance(e, wsevents.CloseConnection) for e in received):
        if any(isinstance(e, wsevents.TextMessage) for e in received):
            await exchange.client_end.send_all(ws.send(wsevents.CloseConnection(code=1000)))
        data = await exchange.client_end.receive_some()
        assert data, received
        ws.receive_data(bytes(data))
        received += list(ws.events())
    assert [e.data for e in received if isinstance(e, wsevents.TextMessage)] == ["hello over h2"]
    await exchange.client_end.send_eof()
    await done.wait()
    assert "upgrade via" in exchange.note


async def test_h2_websocket_with_a_wrong_accept_is_502(nursery: trio.Nursery) -> None:
    heads: list[bytes] = []

    async def backend(stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(65536)
        heads.append(head)
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"  # for the RFC's sample key
        )
        await drain(stream)

    context, match = proxy_route_config(await serve_tcp_backend(nursery, backend), upgrade=True)
    exchange = StandInH2Exchange(h2_request(1234))
    await handle_proxy(exchange, match, context)
    assert exchange.status == 502
    (head,) = heads
    # A fresh random key, not lighttpd's fixed one.
    key = re.search(rb"(?im)^sec-websocket-key: *(\S+)", head)
    assert key is not None
    assert key.group(1) not in (b"dGhlIHNhbXBsZSBub25jZQ==", b"MDAwMDAwMDAwMDAwMDAwMA==")
    assert b"\r\nsec-websocket-version: 13" in head.lower()
    assert head.startswith(b"GET /chat HTTP/1.1\r\n")


async def test_h2_websocket_on_a_route_without_upgrade_is_405(nursery: trio.Nursery) -> None:
    context, match = proxy_route_config(await serve_http_backend(nursery))
    exchange = StandInH2Exchange(h2_request(1234))
    await handle_proxy(exchange, match, context)
    assert exchange.status == 405


async def test_h2_websocket_answered_200_without_upgrading_is_405(nursery: trio.Nursery) -> None:
    context, match = proxy_route_config(await serve_http_backend(nursery), upgrade=True)
    exchange = StandInH2Exchange(h2_request(1234, path=b"/info"))
    await handle_proxy(exchange, match, context)
    assert exchange.status == 405


async def test_h2_body_without_length_is_sent_chunked(nursery: trio.Nursery) -> None:
    context, match = proxy_route_config(await serve_http_backend(nursery))
    exchange = StandInH2Exchange(h2_request(1234, method=b"POST", path=b"/info"), body=[b"abc", b"defg"])
    await handle_proxy(exchange, match, context)
    assert (exchange.status, exchange.ended) == (200, True)
    info = json.loads(exchange.data)
    assert info["size"] == 7
    assert received_headers(info)["transfer-encoding"] == ["chunked"]
    assert received_headers(info)["x-forwarded-proto"] == ["https"]
    # No body at all: no chunked framing either.
    exchange = StandInH2Exchange(h2_request(1234, method=b"GET", path=b"/info"))
    await handle_proxy(exchange, match, context)
    seen = received_headers(json.loads(exchange.data))
    assert "transfer-encoding" not in seen
    assert "content-length" not in seen
