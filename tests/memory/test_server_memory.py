"""The whole server without sockets: memory listener, memory backends, mock clock."""

from __future__ import annotations

import functools

import pytest
import trio

import wstrio
from wstrio.testing import MemoryConnector, MemoryListener, open_websocket_stream


async def echo(stream: trio.abc.Stream) -> None:
    async with stream:
        try:
            async for chunk in stream:
                await stream.send_all(chunk)
        except trio.BrokenResourceError:
            pass


def config(**server: object) -> wstrio.ServerConfig:
    return wstrio.config_from_mapping(
        {
            "server": {"listen": ["127.0.0.1:0"], **server},
            "route": [{"path": "/ws/", "handler": "wstunnel", "backend": [{"host": "10.0.0.1", "port": 1}]}],
        }
    )


async def test_tunnel_over_memory_streams(nursery: trio.Nursery) -> None:
    listener = MemoryListener()
    connector = MemoryConnector(nursery, echo)
    await nursery.start(functools.partial(wstrio.serve_listeners, config(), [listener], connector=connector))
    stream = await listener.connect()
    async with open_websocket_stream(stream, target="/ws/") as ws:
        await ws.send("over memory")
        assert await ws.receive() == "over memory"
    assert connector.connections == 1


async def test_idle_timeout_under_the_mock_clock(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    listener = MemoryListener()
    connector = MemoryConnector(nursery, echo)
    idle = config(**{"max-read-idle": 600})
    await nursery.start(functools.partial(wstrio.serve_listeners, idle, [listener], connector=connector))
    stream = await listener.connect()
    async with open_websocket_stream(stream, target="/ws/", timeout=3600) as ws:
        start = trio.current_time()
        assert await ws.wait_closed() == 1001
        assert trio.current_time() - start >= 600


async def test_refused_backend_is_a_503(nursery: trio.Nursery) -> None:
    listener = MemoryListener()
    connector = MemoryConnector(nursery, echo)
    connector.refuse.add("10.0.0.1:1")
    await nursery.start(functools.partial(wstrio.serve_listeners, config(), [listener], connector=connector))
    stream = await listener.connect()
    with pytest.raises(wstrio.testing.ConnectionRejected) as info:
        async with open_websocket_stream(stream, target="/ws/"):
            pass
    assert info.value.status_code == 503
