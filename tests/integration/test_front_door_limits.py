"""Per-client limits at the front door (issue 12 "Limits"; issue 13, defect 4).

``max-connections-per-ip`` (server-wide: 429 to the first request, HTTP/2
GOAWAY ENHANCE_YOUR_CALM; per route: 429 for the handler's whole run),
``request-rate``/``request-burst`` (a token bucket per address: 429 with
``Retry-After``), route ``allow``/``deny`` (403), and ``max-tunnels``
(server-wide and per route: 503 with ``Retry-After``) — each refused before
any backend is contacted, over HTTP/1.1 and HTTP/2, logged once at INFO.
Clients connect from 127.0.0.1 and, for a second address, 127.0.0.2
(Linux routes all of 127/8 to the loopback).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
import trio.testing

from tests.h2client import open_h2_client
from tests.helpers import RawClient, RawClients, echo_route, serve_recording_backend, serve_tcp_backend, start_server

HEAD = b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("index\n")
    return root


async def from_address(port: int, source: str) -> RawClient:
    return RawClient(await trio.open_tcp_stream("127.0.0.1", port, local_address=source))


def refusals(caplog: pytest.LogCaptureFixture, fragment: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "wstrio.connection" and fragment in r.getMessage() and r.levelno == logging.INFO
    ]


class CountingEcho:
    """A TCP echo backend that counts its connections."""

    def __init__(self) -> None:
        self.connections = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        try:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass


# --------------------------------------------------------------------------
# max-connections-per-ip, server-wide
# --------------------------------------------------------------------------


async def test_connections_over_the_per_ip_limit_get_429(
    nursery: trio.Nursery, raw: RawClients, www: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wstrio")
    server = await start_server(
        nursery, {"server": {"document-root": str(www), "max-connections-per-ip": 2}, "route": []}
    )
    first = await raw.tcp(server.port)
    second = await raw.tcp(server.port)
    assert (await first.request(HEAD)).status == 200
    assert (await second.request(HEAD)).status == 200
    third = await raw.tcp(server.port)
    response = await third.request(HEAD)
    assert response.status == 429
    assert response.header(b"retry-after") == b"5"
    assert response.header(b"connection") == b"close"
    assert await third.read_to_eof() == b""
    # Another address has its own count.
    other = await from_address(server.port, "127.0.0.2")
    assert (await other.request(HEAD)).status == 200
    await other.aclose()
    assert len(refusals(caplog, "max-connections-per-ip")) == 1
    # A slot comes back when a connection ends.
    await first.aclose()
    for _ in range(1000):
        again = await raw.tcp(server.port)
        if (await again.request(HEAD)).status == 200:
            break
        await trio.sleep(0.01)
    else:
        pytest.fail("the slot of a closed connection never came back")
    assert (await second.request(HEAD)).status == 200  # the admitted connections are served as before


async def test_an_h2_connection_over_the_limit_gets_goaway_enhance_your_calm(nursery: trio.Nursery, www: Path) -> None:
    server = await start_server(
        nursery, {"server": {"document-root": str(www), "max-connections-per-ip": 1}, "route": []}
    )
    async with open_h2_client("127.0.0.1", server.port) as first:
        status, _, body = await first.get("/index.html", scheme="http")
        assert (status, body) == (200, b"index\n")
        async with open_h2_client("127.0.0.1", server.port) as second:
            with trio.fail_after(10):
                await second.goaway_event.wait()
            assert second.goaway is not None
            assert second.goaway.error_code == 0xB
        status, _, _ = await first.get("/index.html", scheme="http")
        assert status == 200


# --------------------------------------------------------------------------
# request-rate: a token bucket per address
# --------------------------------------------------------------------------


async def test_the_request_rate_is_a_token_bucket_per_address(
    nursery: trio.Nursery, raw: RawClients, www: Path
) -> None:
    # 50 per second: a token every 20 ms (real time: the server's clock is
    # Trio's, and the autojump clock would also fire the client's timeouts).
    server = await start_server(
        nursery,
        {"server": {"document-root": str(www), "request-rate": 50, "request-burst": 2}, "route": []},
    )
    client = await raw.tcp(server.port)
    assert (await client.request(HEAD)).status == 200
    assert (await client.request(HEAD)).status == 200
    refused = await client.request(HEAD)
    assert refused.status == 429
    assert refused.header(b"retry-after") == b"1"
    # A refusal does not close a keep-alive connection; another address is not limited.
    other = await from_address(server.port, "127.0.0.2")
    assert (await other.request(HEAD)).status == 200
    await other.aclose()
    await trio.sleep(0.05)  # more than one token's time
    assert (await client.request(HEAD)).status == 200


async def test_each_h2_stream_is_a_request(nursery: trio.Nursery, www: Path) -> None:
    server = await start_server(
        nursery,
        {"server": {"document-root": str(www), "request-rate": 0.001, "request-burst": 3}, "route": []},
    )
    async with open_h2_client("127.0.0.1", server.port) as client:
        statuses = [(await client.get("/index.html", scheme="http"))[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        st = await client.request("GET", "/index.html", scheme="http")
        assert await st.response_headers() == 429
        assert st.header(b"retry-after") is not None


async def test_a_refused_request_never_reaches_the_backend(nursery: trio.Nursery, raw: RawClients) -> None:
    seen: list[h11.Request] = []
    backend = await serve_recording_backend(nursery, seen.append)
    route = {"path": "/p/", "handler": "proxy", "backend": [{"host": "127.0.0.1", "port": backend}]}
    server = await start_server(nursery, {"server": {"request-rate": 0.001, "request-burst": 1}, "route": [route]})
    client = await raw.tcp(server.port)
    assert (await client.request(b"GET /p/1 HTTP/1.1\r\nHost: x\r\n\r\n")).status == 200
    assert (await client.request(b"GET /p/2 HTTP/1.1\r\nHost: x\r\n\r\n")).status == 429
    assert [r.target for r in seen] == [b"/p/1"]


# --------------------------------------------------------------------------
# allow / deny
# --------------------------------------------------------------------------


def proxy_route(port: int, **extra: Any) -> dict[str, Any]:
    return {"path": "/admin/", "handler": "proxy", "backend": [{"host": "127.0.0.1", "port": port}], **extra}


@pytest.mark.parametrize(
    ("rules", "from_one", "from_two"),
    [
        ({"allow": ["10.0.0.0/8"]}, 403, 403),
        ({"allow": ["127.0.0.1"]}, 200, 403),
        ({"deny": ["127.0.0.2"]}, 200, 403),
        ({"allow": ["127.0.0.0/8"], "deny": ["127.0.0.2/32"]}, 200, 403),
        ({"allow": ["::ffff:127.0.0.0/104"]}, 403, 403),  # an IPv6 network holds no IPv4 client
    ],
)
async def test_allow_and_deny(
    nursery: trio.Nursery, raw: RawClients, rules: dict[str, list[str]], from_one: int, from_two: int
) -> None:
    seen: list[h11.Request] = []
    backend = await serve_recording_backend(nursery, seen.append)
    server = await start_server(nursery, {"route": [proxy_route(backend, **rules)]})
    one = await raw.tcp(server.port)
    two = await from_address(server.port, "127.0.0.2")
    request = b"GET /admin/x HTTP/1.1\r\nHost: x\r\n\r\n"
    assert (await one.request(request)).status == from_one
    assert (await two.request(request)).status == from_two
    await two.aclose()
    assert len(seen) == [from_one, from_two].count(200), "a refused request reached the backend"


async def test_a_unix_socket_client_is_in_no_list(nursery: trio.Nursery, tmp_path: Path) -> None:
    seen: list[h11.Request] = []
    backend = await serve_recording_backend(nursery, seen.append)
    sock = tmp_path / "w.sock"
    routes = [
        proxy_route(backend, allow=["127.0.0.0/8"]),
        {**proxy_route(backend, deny=["0.0.0.0/0"]), "path": "/open/"},
    ]
    await start_server(nursery, {"server": {"listen": [f"unix:{sock}"]}, "route": routes})
    client = await RawClient.unix(sock)
    assert (await client.request(b"GET /admin/x HTTP/1.1\r\nHost: x\r\n\r\n")).status == 403
    assert (await client.request(b"GET /open/x HTTP/1.1\r\nHost: x\r\n\r\n")).status == 200
    await client.aclose()


async def test_allow_and_deny_apply_to_h2_and_websockets(nursery: trio.Nursery) -> None:
    echo = CountingEcho()
    port = await serve_tcp_backend(nursery, echo.handle)
    server = await start_server(nursery, {"route": [echo_route(port, allow=["10.0.0.0/8"])]})
    async with open_h2_client("127.0.0.1", server.port) as client:
        st = await client.open_websocket_stream("/ws/", scheme="http")
        assert await st.response_headers() == 403
    client1 = await RawClient.tcp(server.port)
    assert (await client1.ws_handshake()).status == 403
    await client1.aclose()
    assert echo.connections == 0


# --------------------------------------------------------------------------
# route max-connections-per-ip, and max-tunnels
# --------------------------------------------------------------------------


async def test_route_per_ip_limit_counts_open_tunnels(nursery: trio.Nursery, raw: RawClients) -> None:
    echo = CountingEcho()
    port = await serve_tcp_backend(nursery, echo.handle)
    server = await start_server(
        nursery, {"server": {"shutdown-timeout": 1}, "route": [echo_route(port, **{"max-connections-per-ip": 1})]}
    )
    first = await raw.tcp(server.port)
    assert (await first.ws_handshake()).status == 101
    second = await raw.tcp(server.port)
    refused = await second.ws_handshake()
    assert refused.status == 429
    assert refused.header(b"retry-after") == b"5"
    other = await from_address(server.port, "127.0.0.2")
    assert (await other.ws_handshake()).status == 101
    await other.aclose()
    assert echo.connections == 2
    await first.aclose()
    for _ in range(1000):
        again = await raw.tcp(server.port)
        if (await again.ws_handshake()).status == 101:
            break
        await trio.sleep(0.01)
    else:
        pytest.fail("the tunnel's slot never came back")


@pytest.mark.parametrize("where", ["server", "route"])
async def test_max_tunnels_is_503_before_the_backend(
    nursery: trio.Nursery, raw: RawClients, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wstrio")
    echo = CountingEcho()
    port = await serve_tcp_backend(nursery, echo.handle)
    if where == "server":
        config: dict[str, Any] = {"server": {"max-tunnels": 1, "shutdown-timeout": 1}, "route": [echo_route(port)]}
    else:
        routes = [echo_route(port, **{"max-tunnels": 1}), echo_route(port, "/other/")]
        config = {"server": {"shutdown-timeout": 1}, "route": routes}
    server = await start_server(nursery, config)
    first = await raw.tcp(server.port)
    assert (await first.ws_handshake()).status == 101
    second = await raw.tcp(server.port)
    refused = await second.ws_handshake()
    assert refused.status == 503
    assert refused.header(b"retry-after") == b"5"
    # HTTP/2 WebSockets count alike.
    async with open_h2_client("127.0.0.1", server.port) as client:
        st = await client.open_websocket_stream("/ws/", scheme="http")
        assert await st.response_headers() == 503
        if where == "route":
            ws = await client.websocket("/other/", scheme="http")  # another route has room
            await ws.send_text("hi\n")
            assert await ws.receive_message() == "hi\n"
    assert echo.connections == (1 if where == "server" else 2)
    assert len(refusals(caplog, "max-tunnels")) == 2
    # Plain requests are not tunnels.
    plain = await raw.tcp(server.port)
    assert (await plain.request(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")).status in (404, 426)
