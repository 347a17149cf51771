"""Absolute-form targets, ``OPTIONS *`` and lingering close (issue 12, defect 7).

RFC 9112 section 3.2.2: a server MUST accept absolute-form targets
(``GET http://host/path HTTP/1.1``), and their authority replaces ``Host``.
``OPTIONS *`` (RFC 9110 section 9.3.7) asks about the server: wstrio answers
it and never passes it to a backend.  After an error response wstrio shuts
down its write side and drains what the client still sends, briefly, before
closing: closing with unread input makes the kernel send a TCP reset, which
can destroy the response.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import h11
import pytest
import trio

import wstrio
from tests.h2client import open_h2_client
from tests.helpers import RawClients, echo_route, serve_echo_tcp, serve_recording_backend, start_server
from wstrio._io.http import h1


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("index\n")
    return root


async def gateway(
    nursery: trio.Nursery, www: Path, backend_port: int | None = None, echo_port: int | None = None
) -> wstrio.Server:
    """Static files from ``www``; ``/proxy/`` to ``backend_port``; ``/ws/`` a wstunnel to ``echo_port``."""
    routes: list[dict[str, object]] = []
    if backend_port is not None:
        routes.append({"path": "/proxy/", "handler": "proxy", "backend": [{"host": "127.0.0.1", "port": backend_port}]})
    if echo_port is not None:
        routes.append(echo_route(echo_port, "/ws/"))
    return await start_server(nursery, {"server": {"document-root": str(www)}, "route": routes})


# --------------------------------------------------------------------------
# Absolute-form targets
# --------------------------------------------------------------------------


async def test_an_absolute_form_target_is_served(nursery: trio.Nursery, raw: RawClients, www: Path) -> None:
    server = await gateway(nursery, www)
    client = await raw.tcp(server.port)
    response = await client.request(b"GET http://example.com/index.html HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert response.status == 200
    assert response.body == b"index\n"
    # keep-alive goes on as after any request
    response = await client.request(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.status == 200


async def test_the_backend_gets_origin_form_and_the_targets_authority_as_host(
    nursery: trio.Nursery, raw: RawClients, www: Path
) -> None:
    seen: list[h11.Request] = []
    backend = await serve_recording_backend(nursery, seen.append)
    server = await gateway(nursery, www, backend)
    client = await raw.tcp(server.port)
    response = await client.request(
        b"GET http://app.example:8080/proxy/a?b=1 HTTP/1.1\r\nHost: ignored.example\r\n\r\n"
    )
    assert response.status == 200, response
    (request,) = seen
    assert request.target == b"/proxy/a?b=1"
    headers = dict(request.headers)
    assert headers[b"host"] == b"app.example:8080"
    assert b"ignored.example" not in b"".join(value for _, value in request.headers)


async def test_an_absolute_form_handshake_opens_the_tunnel(nursery: trio.Nursery, raw: RawClients, www: Path) -> None:
    echo = await serve_echo_tcp(nursery)
    server = await gateway(nursery, www, echo_port=echo)
    client = await raw.tcp(server.port)
    response = await client.ws_handshake(f"http://127.0.0.1:{server.port}/ws/")
    assert response.status == 101, response


@pytest.mark.parametrize(
    "target",
    [b"ftp://example.com/index.html", b"http:///index.html", b"http://user@example.com/index.html", b"http://a b/"],
)
async def test_unusable_absolute_forms_are_400(
    nursery: trio.Nursery, raw: RawClients, www: Path, target: bytes
) -> None:
    server = await gateway(nursery, www)
    client = await raw.tcp(server.port)
    response = await client.request(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.status == 400


async def test_an_absolute_form_cannot_climb_out_of_a_route(nursery: trio.Nursery, raw: RawClients, www: Path) -> None:
    seen: list[h11.Request] = []
    backend = await serve_recording_backend(nursery, seen.append)
    server = await gateway(nursery, www, backend)
    client = await raw.tcp(server.port)
    response = await client.request(b"GET http://x/admin/..%2fproxy/x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.status == 200, response
    assert [r.target for r in seen] == [b"/proxy/x"]


# --------------------------------------------------------------------------
# OPTIONS *
# --------------------------------------------------------------------------


async def test_options_asterisk_is_answered_by_wstrio(nursery: trio.Nursery, raw: RawClients, www: Path) -> None:
    seen: list[h11.Request] = []
    backend = await serve_recording_backend(nursery, seen.append)
    server = await start_server(
        nursery, {"route": [{"path": "/", "handler": "proxy", "backend": [{"host": "127.0.0.1", "port": backend}]}]}
    )
    client = await raw.tcp(server.port)
    response = await client.request(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", method="OPTIONS")
    assert response.status == 200
    assert response.header(b"allow") == b"OPTIONS, GET, HEAD, POST"
    assert response.header(b"content-length") == b"0"
    assert seen == [], "OPTIONS * reached a backend"
    # the connection stays usable, and other targets still reach the backend
    response = await client.request(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.status == 200
    assert [r.target for r in seen] == [b"/x"]


@pytest.mark.parametrize("method", [b"GET", b"POST", b"DELETE"])
async def test_asterisk_with_another_method_is_400(
    nursery: trio.Nursery, raw: RawClients, www: Path, method: bytes
) -> None:
    server = await gateway(nursery, www)
    client = await raw.tcp(server.port)
    response = await client.request(method + b" * HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert response.status == 400


async def test_h2_options_asterisk(nursery: trio.Nursery, www: Path) -> None:
    server = await gateway(nursery, www)
    async with open_h2_client("127.0.0.1", server.port) as client:
        stream = await client.request("OPTIONS", "*", scheme="http")
        assert await stream.response_headers() == 200
        assert stream.header(b"allow") == b"OPTIONS, GET, HEAD, POST"
        assert await stream.read_all() == b""


# --------------------------------------------------------------------------
# Lingering close
# --------------------------------------------------------------------------

JUNK = b"x" * (256 << 10)  # more than one read of the server's: most stays in its kernel buffer


async def send_quietly(stream: trio.SocketStream, data: bytes) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(data)


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", id="bad host"),
        pytest.param(b"GET /index.html HTTP/1.1\r\n\x00\r\n\r\n", id="malformed"),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", id="cl+te"
        ),
    ],
)
async def test_an_error_response_is_not_destroyed_by_a_reset(nursery: trio.Nursery, www: Path, head: bytes) -> None:
    server = await gateway(nursery, www)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        nursery.start_soon(send_quietly, stream, head + JUNK)
        received = b""
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError as exc:
                pytest.fail(f"the connection was reset after {received[:40]!r}: {exc.__cause__!r}")
            if not chunk:
                break
            received += chunk
        assert received.startswith(b"HTTP/1.1 400 ")
        assert received.endswith(b"400 Bad Request\n")


async def test_lingering_is_bounded_in_time(nursery: trio.Nursery, www: Path, autojump_clock: trio.abc.Clock) -> None:
    server = await gateway(nursery, www)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n")
        started = trio.current_time()
        # The client reads the response and EOF, then keeps sending for ever.
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
        assert received.startswith(b"HTTP/1.1 400 ")
        with contextlib.suppress(trio.BrokenResourceError):
            for _ in range(10_000):
                await stream.send_all(b"y" * 1024)
                await trio.sleep(0.01)
            pytest.fail("the server still read after 100 s")
        assert trio.current_time() - started >= h1.LINGER_TIME


async def test_lingering_is_bounded_in_bytes(nursery: trio.Nursery, www: Path) -> None:
    server = await gateway(nursery, www)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n")
        sent = 0
        with contextlib.suppress(trio.BrokenResourceError):
            while sent < 64 * h1.LINGER_BYTES:
                await stream.send_all(b"z" * 65536)
                sent += 65536
            pytest.fail(f"the server read {sent} bytes after its error response")
