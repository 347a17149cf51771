"""``max-tunnel-lifetime``: a WebSocket gets CLOSE 1001 at that age, busy or not (issue 13, limits).

Server-wide and per route (the route's value wins), for a terminated
WebSocket (wstunnel) and for an upgrade relayed to a backend (proxy), with
the hub on and off, on Trio's virtual clock.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

import wstrio
from tests.helpers import (
    OP_CLOSE,
    RawClient,
    client_frame,
    echo_route,
    loopback_clock,
    read_head,
    serve_echo_tcp,
    serve_tcp_backend,
)
from tests.helpers import start_server as start

pytestmark = pytest.mark.usefixtures("hub_switch")

SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """Busy tunnels over real sockets: the virtual clock waits for real idleness (see ``loopback_clock``)."""
    return loopback_clock()


async def _chatter(client: RawClient, until: float) -> None:
    """Keep the tunnel busy (never idle) until the virtual time ``until``."""
    while trio.current_time() < until:
        await client.send(client_frame(0x1, b"tick\n"))
        frame = await client.read_frame()
        if frame.opcode == OP_CLOSE:
            raise AssertionError(f"closed at {trio.current_time():.0f} s: {frame.payload!r}")
        await trio.sleep(5)


async def _close_frame(client: RawClient) -> bytes:
    while True:
        frame = await client.read_frame()
        if frame.opcode == OP_CLOSE:
            return frame.payload
        await client.send(client_frame(0x1, b"tick\n"))


@pytest.mark.parametrize(
    ("server_lifetime", "route_lifetime", "expected"),
    [(40, None, 40), (1000, 20, 20), (40, 0, None)],
    ids=["server", "route beats server", "route 0 is no limit"],
)
async def test_a_busy_tunnel_is_closed_1001_at_its_lifetime(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    server_lifetime: float,
    route_lifetime: float | None,
    expected: float | None,
) -> None:
    echo = await serve_echo_tcp(nursery)
    route = echo_route(echo)
    if route_lifetime is not None:
        route["max-tunnel-lifetime"] = route_lifetime
    config = {"server": {"listen": ["127.0.0.1:0"], "max-tunnel-lifetime": server_lifetime}, "route": [route]}
    server = await start(nursery, config)
    client = await RawClient.tcp(server.port)
    client.timeout = 10_000
    assert (await client.ws_handshake()).status == 101
    start_time = trio.current_time()
    if expected is None:
        await _chatter(client, start_time + 200)
        await client.aclose()
        return
    await _chatter(client, start_time + expected - 6)
    payload = await _close_frame(client)
    assert int.from_bytes(payload[:2], "big") == 1001
    assert b"max-tunnel-lifetime" in payload[2:]
    # The check runs once a second (the timer service): within a second or two of the deadline.
    assert trio.current_time() - start_time < expected + 2.5
    await client.aclose()


async def test_a_relayed_upgrade_ends_at_its_lifetime(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def upgrade_echo(stream: trio.SocketStream) -> None:
        await read_head(stream)
        await stream.send_all(SWITCH)
        try:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
        except trio.BrokenResourceError:
            return

    port = await serve_tcp_backend(nursery, upgrade_echo)
    route = {
        "path": "/proxy/",
        "handler": "proxy",
        "upgrade": True,
        "max-tunnel-lifetime": 30,
        "backend": [{"host": "127.0.0.1", "port": port}],
    }
    server = await start(nursery, {"server": {"listen": ["127.0.0.1:0"]}, "route": [route]})
    client = await RawClient.tcp(server.port)
    client.timeout = 10_000
    assert (await client.ws_handshake("/proxy/ws")).status == 101
    start_time = trio.current_time()
    while True:
        await client.send(b"tick")
        try:
            got = await client.read_exactly(4)
        except AssertionError:  # EOF: the relay ended
            break
        assert got == b"tick"
        await trio.sleep(5)
    assert 25 <= trio.current_time() - start_time <= 31
    await client.aclose()


def test_the_config_keys() -> None:
    config = wstrio.config_from_mapping(
        {
            "server": {"max-tunnel-lifetime": 3600},
            "route": [{"path": "/a/", "handler": "wstunnel", "backend": [{"port": 1}], "max-tunnel-lifetime": 60}],
        }
    )
    assert config.max_tunnel_lifetime == 3600
    assert config.tunnel_lifetime(config.routes[0]) == 60
    with pytest.raises(wstrio.ConfigError, match=r"route\[0\]\.max-tunnel-lifetime"):
        wstrio.config_from_mapping(
            {"route": [{"path": "/a/", "handler": "wstunnel", "backend": [{"port": 1}], "max-tunnel-lifetime": -1}]}
        )
