"""``max-request-body-size`` on proxy and CGI-family routes (issue 12, limits).

A declared ``Content-Length`` over the limit gets 413 before any backend is
contacted or any script started (HTTP/1.1: with ``Connection: close``, the
body unread).  A body without a length (chunked, HTTP/2 DATA without
``content-length``) is counted as it arrives: past the limit the backend
request is abandoned and the client gets 413, or, once the response has
started, the exchange is aborted (HTTP/1.1: the connection closes; HTTP/2:
RST_STREAM).  The route's value beats the server's; 0 means no limit; a
WebSocket passed through is not a body.

Everything runs on real loopback sockets, against backends in this file
that record what reached them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
from h2.errors import ErrorCodes

import wstrio
from tests.h2client import StreamReset, open_h2_client
from tests.helpers import RawClient, RawClients, serve_recording_backend, serve_tcp_backend, start_server

LIMIT = 1000


def chunked(*parts: bytes) -> bytes:
    """A chunked body of ``parts``, with its last chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


def post_head(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: t", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------


class BackendConnection:
    """What one connection to :class:`EchoBackend` brought."""

    def __init__(self) -> None:
        self.target: bytes | None = None
        self.body = bytearray()
        self.complete = False
        """The whole request body arrived (its end was seen)."""
        self.ended = trio.Event()
        """The connection is over (wstrio closed it, or the answer went out)."""


class EchoBackend:
    """An HTTP/1.1 backend that echoes the request body once it is complete.

    With ``early`` it answers at once instead (a chunked 200 with ``hello``)
    and then reads the body until the connection ends, never finishing its
    answer: a response that started before the body ended.
    """

    def __init__(self, *, early: bool = False) -> None:
        self.early = early
        self.connections: list[BackendConnection] = []

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = BackendConnection()
        self.connections.append(conn)
        h = h11.Connection(h11.SERVER)
        try:
            while True:
                event = h.next_event()
                if event is h11.NEED_DATA:
                    h.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Request):
                    conn.target = event.target
                    if self.early:
                        await stream.send_all(h.send(h11.Response(status_code=200, headers=[])))
                        await stream.send_all(h.send(h11.Data(data=b"hello")))
                elif isinstance(event, h11.Data):
                    conn.body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    conn.complete = True
                    if self.early:
                        continue
                    headers = [(b"content-length", str(len(conn.body)).encode())]
                    response = h.send(h11.Response(status_code=200, headers=headers))
                    await stream.send_all(
                        response + h.send(h11.Data(data=bytes(conn.body))) + h.send(h11.EndOfMessage())
                    )
                    return
                else:
                    return
        except (h11.RemoteProtocolError, trio.BrokenResourceError):
            return
        finally:
            conn.ended.set()


async def proxy_server(nursery: trio.Nursery, backend: EchoBackend, **server: Any) -> wstrio.Server:
    port = await serve_tcp_backend(nursery, backend.handle)
    return await start_server(
        nursery,
        {
            "server": {"max-request-body-size": LIMIT, **server},
            "route": [{"path": "/p/", "handler": "proxy", "backend": [{"host": "127.0.0.1", "port": port}]}],
        },
    )


async def assert_refused_h1(client: RawClient) -> None:
    """A 413 with ``Connection: close``, then the end of the connection."""
    reply = await client.read_response()
    assert reply.status == 413
    assert reply.header(b"connection") == b"close"
    assert await client.read_to_eof() == b""


# --------------------------------------------------------------------------
# Proxy, HTTP/1.1
# --------------------------------------------------------------------------


async def test_content_length_over_the_limit_never_reaches_the_backend(
    nursery: trio.Nursery, raw: RawClients, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wstrio")
    heads: list[h11.Request] = []
    port = await serve_recording_backend(nursery, heads.append)
    route = {"path": "/p/", "handler": "proxy", "backend": [{"host": "127.0.0.1", "port": port}]}
    server = await start_server(nursery, {"server": {"max-request-body-size": LIMIT}, "route": [route]})

    client = await raw.tcp(server.port)
    # The head alone: the body is not read, so it need not be sent.
    await client.send(post_head("/p/x", f"Content-Length: {LIMIT + 1}"))
    await assert_refused_h1(client)
    assert heads == []

    # The same backend gets a request at the limit.
    client = await raw.tcp(server.port)
    reply = await client.request(post_head("/p/y", f"Content-Length: {LIMIT}") + b"a" * LIMIT)
    assert (reply.status, reply.body) == (200, b"ok")
    assert [h.target for h in heads] == [b"/p/y"]

    # Refused at INFO, as a client's fault; nothing louder, no traceback.
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == []
    assert any("max-request-body-size" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


async def test_bodies_up_to_the_limit_pass_byte_exact(nursery: trio.Nursery, raw: RawClients) -> None:
    backend = EchoBackend()
    server = await proxy_server(nursery, backend)
    body = os.urandom(LIMIT)
    client = await raw.tcp(server.port)
    reply = await client.request(post_head("/p/length", f"Content-Length: {LIMIT}") + body)
    assert (reply.status, reply.body) == (200, body)
    client = await raw.tcp(server.port)
    reply = await client.request(
        post_head("/p/chunked", "Transfer-Encoding: chunked") + chunked(body[:600], body[600:])
    )
    assert (reply.status, reply.body) == (200, body)
    assert [bytes(c.body) for c in backend.connections] == [body, body]


async def test_chunked_body_over_the_limit_abandons_the_backend_request(nursery: trio.Nursery, raw: RawClients) -> None:
    backend = EchoBackend()
    server = await proxy_server(nursery, backend)
    client = await raw.tcp(server.port)
    await client.send(post_head("/p/x", "Transfer-Encoding: chunked") + chunked(b"a" * 600, b"b" * 600))
    await assert_refused_h1(client)
    [conn] = backend.connections
    with trio.fail_after(10):
        await conn.ended.wait()
    # The backend got what was within the limit, never the end of the body.
    assert conn.body == b"a" * 600
    assert not conn.complete


async def test_over_the_limit_after_the_response_started_closes_the_connection(
    nursery: trio.Nursery, raw: RawClients
) -> None:
    backend = EchoBackend(early=True)
    server = await proxy_server(nursery, backend)
    client = await raw.tcp(server.port)
    await client.send(post_head("/p/x", "Transfer-Encoding: chunked") + b"64\r\n" + b"a" * 100 + b"\r\n")
    head = await client.read_head()
    assert head.status == 200
    await client.read_until(b"hello\r\n")
    await client.send(b"7d0\r\n" + b"b" * 2000 + b"\r\n")
    # The response never ends properly: no last chunk, the connection closes.
    rest = await client.read_to_eof()
    assert b"0\r\n\r\n" not in rest
    [conn] = backend.connections
    with trio.fail_after(10):
        await conn.ended.wait()
    assert conn.body == b"a" * 100
    assert not conn.complete


# --------------------------------------------------------------------------
# Proxy, HTTP/2
# --------------------------------------------------------------------------


async def test_h2_content_length_over_the_limit_never_reaches_the_backend(nursery: trio.Nursery) -> None:
    backend = EchoBackend()
    server = await proxy_server(nursery, backend)
    async with open_h2_client("127.0.0.1", server.port) as client:
        st = await client.request("POST", "/p/x", [(b"content-length", str(LIMIT + 1).encode())], end_stream=False)
        assert await st.response_headers() == 413
        assert b"413" in await st.read_all()
        body = os.urandom(LIMIT)
        st = await client.request("POST", "/p/y", [(b"content-length", str(LIMIT).encode())], body)
        assert await st.response_headers() == 200
        assert await st.read_all() == body
    assert [c.target for c in backend.connections] == [b"/p/y"]


async def test_h2_body_without_length_is_counted(nursery: trio.Nursery) -> None:
    backend = EchoBackend()
    server = await proxy_server(nursery, backend)
    async with open_h2_client("127.0.0.1", server.port) as client:
        body = os.urandom(LIMIT)
        st = await client.request("POST", "/p/ok", body=body)
        assert await st.response_headers() == 200
        assert await st.read_all() == body

        st = await client.request("POST", "/p/big", end_stream=False)
        await st.send(b"a" * 600)
        with contextlib.suppress(StreamReset):
            await st.send(b"b" * 600)
        assert await st.response_headers() == 413
        assert b"413" in await st.read_all()
    ok, big = backend.connections
    assert bytes(ok.body) == body
    with trio.fail_after(10):
        await big.ended.wait()
    assert big.body == b"a" * 600
    assert not big.complete


async def test_h2_over_the_limit_after_the_response_started_resets_the_stream(nursery: trio.Nursery) -> None:
    backend = EchoBackend(early=True)
    server = await proxy_server(nursery, backend)
    async with open_h2_client("127.0.0.1", server.port) as client:
        st = await client.request("POST", "/p/x", end_stream=False)
        await st.send(b"a" * 100)
        assert await st.response_headers() == 200
        assert await st.receive() == b"hello"
        with contextlib.suppress(StreamReset):
            await st.send(b"b" * 2000)
        with pytest.raises(StreamReset) as reset:
            await st.read_all()
        assert reset.value.code == ErrorCodes.INTERNAL_ERROR
        # The connection itself goes on (no route and no document root: 404
        # from wstrio; the early backend would never finish an answer).
        status, _, _ = await client.get("/elsewhere")
    assert status == 404
    first = backend.connections[0]
    with trio.fail_after(10):
        await first.ended.wait()
    assert first.body == b"a" * 100


# --------------------------------------------------------------------------
# Which limit applies
# --------------------------------------------------------------------------


async def test_route_value_beats_the_server_value(nursery: trio.Nursery, raw: RawClients) -> None:
    backend = EchoBackend()
    port = await serve_tcp_backend(nursery, backend.handle)
    to = [{"host": "127.0.0.1", "port": port}]
    routes = [
        {"path": "/server/", "handler": "proxy", "backend": to},
        {"path": "/bigger/", "handler": "proxy", "backend": to, "max-request-body-size": 1000},
        {"path": "/free/", "handler": "proxy", "backend": to, "max-request-body-size": 0},
        {"path": "/smaller/", "handler": "proxy", "backend": to, "max-request-body-size": 10},
    ]
    server = await start_server(nursery, {"server": {"max-request-body-size": 100}, "route": routes})
    body = os.urandom(500)
    for path, status in [("/server/", 413), ("/bigger/", 200), ("/free/", 200), ("/smaller/", 413)]:
        client = await raw.tcp(server.port)
        reply = await client.request(post_head(path, f"Content-Length: {len(body)}") + body)
        assert reply.status == status, path
        if status == 200:
            assert reply.body == body
    small = b"x" * 50
    client = await raw.tcp(server.port)
    reply = await client.request(post_head("/smaller/", "Transfer-Encoding: chunked") + chunked(small))
    assert reply.status == 413
    client = await raw.tcp(server.port)
    reply = await client.request(post_head("/server/", "Transfer-Encoding: chunked") + chunked(small))
    assert (reply.status, reply.body) == (200, small)


async def test_zero_means_no_limit(nursery: trio.Nursery, raw: RawClients) -> None:
    backend = EchoBackend()
    server = await proxy_server(nursery, backend, **{"max-request-body-size": 0})
    body = os.urandom(300_000)
    client = await raw.tcp(server.port)
    reply = await client.request(post_head("/p/x", f"Content-Length: {len(body)}") + body)
    assert (reply.status, reply.body) == (200, body)
    client = await raw.tcp(server.port)
    reply = await client.request(
        post_head("/p/y", "Transfer-Encoding: chunked") + chunked(body[:70_000], body[70_000:])
    )
    assert (reply.status, reply.body) == (200, body)


# --------------------------------------------------------------------------
# A WebSocket passed through is not a body
# --------------------------------------------------------------------------


async def _upgrade_echo(stream: trio.SocketStream) -> None:
    head = b""
    while b"\r\n\r\n" not in head:
        data = await stream.receive_some(65536)
        if not data:
            return
        head += data
    await stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    with contextlib.suppress(trio.BrokenResourceError):
        while data := await stream.receive_some(65536):
            await stream.send_all(data)


async def test_upgraded_tunnel_is_not_limited(nursery: trio.Nursery, raw: RawClients) -> None:
    port = await serve_tcp_backend(nursery, _upgrade_echo)
    route = {"path": "/ws/", "handler": "proxy", "upgrade": True, "backend": [{"host": "127.0.0.1", "port": port}]}
    server = await start_server(nursery, {"server": {"max-request-body-size": 10}, "route": [route]})
    client = await raw.tcp(server.port)
    assert (await client.ws_handshake("/ws/x")).status == 101
    data = os.urandom(50_000)
    await client.send(data)
    assert await client.read_exactly(len(data)) == data


# --------------------------------------------------------------------------
# CGI, SCGI, FastCGI
# --------------------------------------------------------------------------

BODY_SCRIPT = """\
import os, sys
with open(os.environ["MARKER"], "a") as marker:
    marker.write("ran\\n")
data = sys.stdin.buffer.read()
sys.stdout.buffer.write(b"Content-Type: application/octet-stream\\r\\n\\r\\n" + data)
"""


@pytest.fixture
def cgi_config(tmp_path: Path) -> dict[str, Any]:
    www = tmp_path / "www"
    (www / "cgi").mkdir(parents=True)
    (www / "cgi" / "body.py").write_text(BODY_SCRIPT)
    route = {
        "path": "/cgi/",
        "handler": "cgi",
        "assign": {".py": sys.executable},
        "environment": {"MARKER": str(tmp_path / "ran")},
    }
    return {"server": {"document-root": str(www), "max-request-body-size": LIMIT}, "route": [route]}


async def test_cgi_script_is_not_started_for_a_body_over_the_limit(
    nursery: trio.Nursery, raw: RawClients, tmp_path: Path, cgi_config: dict[str, Any]
) -> None:
    marker = tmp_path / "ran"
    server = await start_server(nursery, cgi_config)
    client = await raw.tcp(server.port)
    await client.send(post_head("/cgi/body.py", f"Content-Length: {LIMIT + 1}"))
    await assert_refused_h1(client)
    client = await raw.tcp(server.port)
    await client.send(post_head("/cgi/body.py", "Transfer-Encoding: chunked") + chunked(b"a" * 600, b"b" * 600))
    await assert_refused_h1(client)
    async with open_h2_client("127.0.0.1", server.port) as h2:
        st = await h2.request("POST", "/cgi/body.py", end_stream=False)
        await st.send(b"a" * 600)
        with contextlib.suppress(StreamReset):
            await st.send(b"b" * 600)
        assert await st.response_headers() == 413
    assert not marker.exists()

    # Up to the limit the script runs and gets the body byte-exact.
    body = os.urandom(LIMIT)
    client = await raw.tcp(server.port)
    reply = await client.request(post_head("/cgi/body.py", "Transfer-Encoding: chunked") + chunked(body[:1], body[1:]))
    assert (reply.status, reply.body) == (200, body)
    assert marker.read_text() == "ran\n"


async def test_cgi_broken_client_body_is_logged_at_info(
    nursery: trio.Nursery, raw: RawClients, cgi_config: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wstrio")
    server = await start_server(nursery, cgi_config)
    client = await raw.tcp(server.port)
    reply = await client.request(post_head("/cgi/body.py", "Transfer-Encoding: chunked") + b"zz\r\n")
    assert reply.status == 400
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "wstrio.connection"]
    assert any(level == logging.INFO and "/cgi/body.py" in text for level, text in messages), messages
    assert [text for level, text in messages if level >= logging.WARNING] == []


class ScgiEcho:
    """An SCGI backend that answers with the body it was sent; counts its connections."""

    def __init__(self) -> None:
        self.connections = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        data = b""
        while b":" not in data:
            data += await stream.receive_some(65536)
        size, _, rest = data.partition(b":")
        while len(rest) < int(size) + 1:
            rest += await stream.receive_some(65536)
        fields = rest[: int(size)].split(b"\0")
        environ = dict(zip(fields[::2], fields[1::2], strict=False))
        body = rest[int(size) + 1 :]
        length = int(environ[b"CONTENT_LENGTH"])
        while len(body) < length:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            body += chunk
        await stream.send_all(b"Status: 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n" + body)


async def test_scgi_backend_is_not_contacted_for_a_body_over_the_limit(nursery: trio.Nursery, raw: RawClients) -> None:
    backend = ScgiEcho()
    port = await serve_tcp_backend(nursery, backend.handle)
    route = {
        "path": "/s/",
        "handler": "scgi",
        "backend": [{"host": "127.0.0.1", "port": port, "check-local": False}],
    }
    server = await start_server(nursery, {"server": {"max-request-body-size": LIMIT}, "route": [route]})
    client = await raw.tcp(server.port)
    await client.send(post_head("/s/x", f"Content-Length: {LIMIT + 1}"))
    await assert_refused_h1(client)
    client = await raw.tcp(server.port)
    await client.send(post_head("/s/x", "Transfer-Encoding: chunked") + chunked(b"a" * 600, b"b" * 600))
    await assert_refused_h1(client)
    assert backend.connections == 0

    body = os.urandom(LIMIT)
    client = await raw.tcp(server.port)
    reply = await client.request(post_head("/s/x", f"Content-Length: {LIMIT}") + body)
    assert (reply.status, reply.body) == (200, body)
    assert backend.connections == 1


async def test_fastcgi_backend_is_not_contacted_for_a_body_over_the_limit(
    nursery: trio.Nursery, raw: RawClients
) -> None:
    opened: list[None] = []

    async def count(stream: trio.SocketStream) -> None:
        opened.append(None)

    port = await serve_tcp_backend(nursery, count)
    route = {
        "path": "/f/",
        "handler": "fastcgi",
        "backend": [{"host": "127.0.0.1", "port": port, "check-local": False}],
    }
    server = await start_server(nursery, {"server": {"max-request-body-size": LIMIT}, "route": [route]})
    client = await raw.tcp(server.port)
    await client.send(post_head("/f/x", f"Content-Length: {LIMIT + 1}"))
    await assert_refused_h1(client)
    assert opened == []
    # At the limit the backend is contacted (and, closing at once, gives a 502).
    client = await raw.tcp(server.port)
    reply = await client.request(post_head("/f/x", f"Content-Length: {LIMIT}") + b"a" * LIMIT)
    assert reply.status == 502
    assert opened == [None]


async def test_a_chunk_line_too_long_is_the_clients_fault(
    nursery: trio.Nursery, raw: RawClients, caplog: pytest.LogCaptureFixture
) -> None:
    """A chunk-size line past h11's buffer limit: a 4xx, logged at INFO, not a backend WARNING (found by fuzzing)."""
    port = await serve_recording_backend(nursery, lambda request: None)
    route = {"path": "/proxy/", "handler": "proxy", "backend": [{"host": "127.0.0.1", "port": port}]}
    server = await start_server(nursery, {"server": {"listen": ["127.0.0.1:0"]}, "route": [route]})
    client = await raw.tcp(server.port)
    caplog.set_level(logging.INFO, "wstrio")
    head = b"POST /proxy/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    await client.send(head + b"5" + b";x" * 100_000 + b"\r\nhello\r\n0\r\n\r\n")
    response = await client.read_response()
    assert 400 <= response.status < 500
    loud = [r.getMessage() for r in caplog.records if r.name.startswith("wstrio") and r.levelno > logging.INFO]
    assert not loud
