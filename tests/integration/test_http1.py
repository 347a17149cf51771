"""The HTTP/1.1 layer over real sockets: keep-alive, limits, timeouts, bad requests."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

import wstrio
from tests.helpers import RawClients, echo_route, handshake_request, serve_echo_tcp, start_server


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "a.txt").write_text("file a\n")
    (root / "b.txt").write_text("file b\n")
    return root


async def http_server(nursery: trio.Nursery, www: Path, **server: Any) -> wstrio.Server:
    return await start_server(nursery, {"server": {"document-root": str(www), **server}})


def request(path: str, *headers: str, version: str = "1.1") -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/{version}", "Host: localhost", *headers]) + "\r\n\r\n").encode()


async def test_keep_alive_serves_two_requests_on_one_connection(
    nursery: trio.Nursery, raw: RawClients, www: Path
) -> None:
    server = await http_server(nursery, www)
    client = await raw.tcp(server.port)
    first = await client.request(request("/a.txt"))
    assert (first.status, first.body) == (200, b"file a\n")
    assert first.header(b"connection") != b"close"
    second = await client.request(request("/b.txt"))
    assert (second.status, second.body) == (200, b"file b\n")
    assert server.statistics().connections_total == 1


async def test_pipelined_requests_are_answered_in_order(nursery: trio.Nursery, raw: RawClients, www: Path) -> None:
    server = await http_server(nursery, www)
    client = await raw.tcp(server.port)
    await client.send(request("/a.txt") + request("/nope") + request("/b.txt", "Connection: close"))
    responses = [await client.read_response() for _ in range(3)]
    assert [(r.status, r.body) for r in responses] == [
        (200, b"file a\n"),
        (404, b"404 Not Found\n"),
        (200, b"file b\n"),
    ]
    assert await client.read_to_eof() == b""


async def test_connection_close_and_http10_close_after_the_response(
    nursery: trio.Nursery, raw: RawClients, www: Path
) -> None:
    server = await http_server(nursery, www)
    for req in (request("/a.txt", "Connection: close"), request("/a.txt", version="1.0")):
        client = await raw.tcp(server.port)
        response = await client.request(req)
        assert (response.status, response.body) == (200, b"file a\n")
        assert await client.read_to_eof() == b"", "the connection stayed open"


async def test_idle_keep_alive_connection_is_closed_without_a_response(
    nursery: trio.Nursery, raw: RawClients, www: Path
) -> None:
    server = await http_server(nursery, www, **{"max-keep-alive-idle": 0.3})
    client = await raw.tcp(server.port)
    assert (await client.request(request("/a.txt"))).status == 200
    assert await client.read_to_eof() == b""  # closed quietly, no 408


async def test_max_keep_alive_requests(nursery: trio.Nursery, raw: RawClients, www: Path) -> None:
    server = await http_server(nursery, www, **{"max-keep-alive-requests": 2})
    client = await raw.tcp(server.port)
    assert (await client.request(request("/a.txt"))).header(b"connection") != b"close"
    last = await client.request(request("/b.txt"))
    assert last.status == 200
    assert last.header(b"connection") == b"close"
    assert await client.read_to_eof() == b""


@pytest.mark.parametrize(
    "garbage",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /a.txt\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 32 + b"\r\n\r\n",
        b"GET /a.txt HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n",
        b"GET /a.txt HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET a.txt HTTP/1.1\r\nHost: localhost\r\n\r\n",  # not origin form
        b"GET /a%00.txt HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ],
    ids=["no-version", "http09", "tls-hello", "bad-header", "no-host", "relative-target", "nul"],
)
async def test_malformed_requests_get_400_and_close(
    nursery: trio.Nursery, raw: RawClients, www: Path, garbage: bytes
) -> None:
    server = await http_server(nursery, www)
    client = await raw.tcp(server.port)
    await client.send(garbage)
    data = await client.read_to_eof()
    assert data.startswith(b"HTTP/1.1 400 "), data[:100]


async def test_oversized_header_is_431(nursery: trio.Nursery, raw: RawClients, www: Path) -> None:
    server = await http_server(nursery, www, **{"max-request-field-size": 4096})
    client = await raw.tcp(server.port)
    await client.send(request("/a.txt", "X-Big: " + "x" * 5000))
    data = await client.read_to_eof()
    assert data.startswith(b"HTTP/1.1 431 "), data[:100]


async def test_header_just_under_the_limit_is_fine(nursery: trio.Nursery, raw: RawClients, www: Path) -> None:
    server = await http_server(nursery, www, **{"max-request-field-size": 4096})
    client = await raw.tcp(server.port)
    response = await client.request(request("/a.txt", "X-Big: " + "x" * 3000))
    assert response.status == 200


async def test_too_many_headers_is_431(nursery: trio.Nursery, raw: RawClients, www: Path) -> None:
    server = await http_server(nursery, www, **{"max-request-headers": 20})
    client = await raw.tcp(server.port)
    await client.send(request("/a.txt", *(f"X-H{i}: {i}" for i in range(25))))
    data = await client.read_to_eof()
    assert data.startswith(b"HTTP/1.1 431 "), data[:100]
    ok = await raw.tcp(server.port)
    assert (await ok.request(request("/a.txt", *(f"X-H{i}: {i}" for i in range(10))))).status == 200


async def test_slow_request_head_gets_408_and_close(nursery: trio.Nursery, raw: RawClients, www: Path) -> None:
    # A real (short) timeout: assert the outcome only, never how long it took.
    server = await http_server(nursery, www, **{"max-read-idle": 0.5})
    client = await raw.tcp(server.port)
    await client.send(b"GET /a.txt HTTP/1.1\r\nHost: loc")
    data = await client.read_to_eof()
    assert data.startswith(b"HTTP/1.1 408 "), data[:100]


async def test_silent_connection_is_closed(nursery: trio.Nursery, raw: RawClients, www: Path) -> None:
    server = await http_server(nursery, www, **{"max-read-idle": 0.3})
    client = await raw.tcp(server.port)
    data = await client.read_to_eof()
    assert data in (b"",) or data.startswith(b"HTTP/1.1 408 ")


async def test_a_slow_client_does_not_block_others(nursery: trio.Nursery, raw: RawClients, www: Path) -> None:
    server = await http_server(nursery, www)
    slow = await raw.tcp(server.port)
    await slow.send(b"GET /a.txt HTTP/1.1\r\n")  # and nothing more for now
    fast = await raw.tcp(server.port)
    assert (await fast.request(request("/b.txt", "Connection: close"))).body == b"file b\n"
    response = await slow.request(b"Host: localhost\r\n\r\n")
    assert (response.status, response.body) == (200, b"file a\n")


async def test_plain_get_on_a_websocket_path_falls_through_to_static(
    nursery: trio.Nursery, raw: RawClients, www: Path
) -> None:
    (www / "ws").mkdir()
    (www / "ws" / "info.txt").write_text("static under /ws/\n")
    port = await serve_echo_tcp(nursery)
    config = {"server": {"document-root": str(www), "shutdown-timeout": 0.25}, "route": [echo_route(port)]}
    server = await start_server(nursery, config)
    client = await raw.tcp(server.port)
    response = await client.request(request("/ws/info.txt"))
    assert (response.status, response.body) == (200, b"static under /ws/\n")
    upgrade = await (await raw.tcp(server.port)).ws_handshake("/ws/info.txt")
    assert upgrade.status == 101


async def test_websocket_upgrade_on_http10_is_not_a_websocket(
    nursery: trio.Nursery, raw: RawClients, www: Path
) -> None:
    port = await serve_echo_tcp(nursery)
    server = await start_server(nursery, {"server": {"document-root": str(www)}, "route": [echo_route(port)]})
    client = await raw.tcp(server.port)
    response = await client.request(handshake_request().replace(b"HTTP/1.1", b"HTTP/1.0", 1))
    assert response.status != 101


async def test_access_log_has_a_line_per_request(
    nursery: trio.Nursery, raw: RawClients, www: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wstrio.access")
    server = await http_server(nursery, www)
    client = await raw.tcp(server.port)
    await client.request(request("/a.txt"))
    await client.request(request("/missing.txt", "Connection: close"))
    await client.read_to_eof()  # the server logs before it closes
    lines = [r.getMessage() for r in caplog.records if r.name == "wstrio.access"]
    assert any('"GET /a.txt HTTP/1.1" 200 7' in line for line in lines), lines
    assert any('"GET /missing.txt HTTP/1.1" 404' in line for line in lines), lines


async def test_max_write_idle_zero_means_no_limit(nursery: trio.Nursery, raw: RawClients, www: Path) -> None:
    # 0 disables the write timeout (as for every timeout); it once made every
    # response time out at once.
    server = await http_server(nursery, www, **{"max-write-idle": 0})
    client = await raw.tcp(server.port)
    response = await client.request(request("/a.txt"))
    assert (response.status, response.body) == (200, b"file a\n")


async def test_max_read_idle_zero_means_no_limit(nursery: trio.Nursery, www: Path) -> None:
    server = await http_server(nursery, www, **{"max-read-idle": 0})
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        # In two parts, so the server has to wait for the rest of the head.
        head = request("/a.txt")
        await stream.send_all(head[:10])
        await trio.sleep(0.2)
        await stream.send_all(head[10:])
        response = b""
        with trio.fail_after(10):
            while not response.endswith(b"file a\n"):
                chunk = await stream.receive_some(65536)
                assert chunk, f"closed early: {response!r}"
                response += chunk
    assert response.startswith(b"HTTP/1.1 200")
