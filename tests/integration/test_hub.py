"""The hub fast path: plain-data tunnels move there, and come back to their tasks intact.

These use real sockets (the hub only takes plain sockets) and check that every
hand-back keeps every byte in order: backpressure, control frames, EOF.  Each
test runs with the hub on and off (its private switch,
``wstrio._io.streams.fastpath.hub.ENABLED``): the same assertions hold on both
paths.  What a hub fault does is in test_handback.py.
"""

from __future__ import annotations

import hashlib
import os

import pytest
import trio
import wsproto
import wsproto.events

from wstrio._io.streams.fastpath.handback import HandBack
from wstrio._io.streams.fastpath.hub import Handler
from wstrio.testing import open_websocket, serve_echo, start_server

pytestmark = pytest.mark.usefixtures("hub_switch")


async def echo_port(nursery: trio.Nursery) -> int:
    address = await serve_echo(nursery)
    assert isinstance(address, tuple)
    return address[1]


def route(port: int, **extra: object) -> dict[str, object]:
    return {
        "route": [
            {
                "path": "/ws/",
                "handler": "wstunnel",
                "frame-type": "binary",
                "backend": [{"host": "127.0.0.1", "port": port}],
                **extra,
            }
        ]
    }


BLOCK = bytes(range(256)) * 255 + os.urandom(256)  # 65,536 bytes, the same for the whole test run


async def flood_backend(stream: trio.SocketStream, total: int) -> None:
    """A backend that sends ``total`` bytes (BLOCK repeated) as fast as it can, then closes."""
    async with stream:
        for _ in range(total // len(BLOCK)):
            await stream.send_all(BLOCK)


async def test_backpressure_hands_the_tunnel_back_and_loses_nothing(
    nursery: trio.Nursery, hub_switch: bool, handbacks: list[HandBack]
) -> None:
    total = 8 << 20
    listeners = await nursery.start(trio.serve_tcp, lambda s: flood_backend(s, total), 0)
    port = listeners[0].socket.getsockname()[1]
    server = await start_server(nursery, route(port))
    received = hashlib.sha256()
    got = 0
    async with open_websocket(server.url("/ws/", scheme="ws"), timeout=30) as ws:
        # Read nothing at first, so the client's socket fills and the hub's
        # writes would block: the tunnel must go back to its tasks.
        await trio.sleep(0.3)
        while got < total:
            data = await ws.receive()
            assert isinstance(data, bytes)
            received.update(data)
            got += len(data)
        close = await ws.wait_closed()
    assert got == total
    assert received.hexdigest() == hashlib.sha256(BLOCK * (total // len(BLOCK))).hexdigest()
    assert close == 1001  # the backend closed
    assert [h.why for h in handbacks] == (["blocked"] if hub_switch else [])


async def test_a_client_ping_mid_stream_is_answered_and_data_keeps_its_order(nursery: trio.Nursery) -> None:
    port = await echo_port(nursery)
    server = await start_server(nursery, route(port))
    async with open_websocket(server.url("/ws/", scheme="ws")) as ws:
        await ws.send(b"one")
        assert await ws.receive() == b"one"
        await ws.ping(b"are you there")
        await ws.send(b"two")
        assert await ws.receive() == b"two"
        assert ws.pongs == [b"are you there"]
        for i in range(50):
            await ws.send(b"%d" % i)
            assert await ws.receive() == b"%d" % i


async def test_many_frames_and_a_close_in_one_write_reach_the_backend_in_order(nursery: trio.Nursery) -> None:
    received: list[bytes] = []
    done = trio.Event()

    async def recording_backend(stream: trio.SocketStream) -> None:
        async with stream:
            async for chunk in stream:
                received.append(bytes(chunk))
        done.set()

    listeners = await nursery.start(trio.serve_tcp, recording_backend, 0)
    port = listeners[0].socket.getsockname()[1]
    server = await start_server(nursery, route(port))
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(client.send(wsproto.events.Request(host="localhost", target="/ws/")))
        while not any(isinstance(e, wsproto.events.AcceptConnection) for e in client.events()):
            client.receive_data(await stream.receive_some(65536))
        burst = b"".join(client.send(wsproto.events.BytesMessage(data=b"%04d" % i)) for i in range(500))
        burst += client.send(wsproto.events.CloseConnection(code=1000))
        await stream.send_all(burst)
        with trio.fail_after(10):
            await done.wait()
    assert b"".join(received) == b"".join(b"%04d" % i for i in range(500))


async def test_tunnels_with_pings_stay_with_their_tasks(nursery: trio.Nursery, handbacks: list[HandBack]) -> None:
    port = await echo_port(nursery)
    server = await start_server(nursery, route(port, **{"ping-interval": 0.2, "pong-timeout": 5}))
    async with open_websocket(server.url("/ws/", scheme="ws")) as ws:
        for i in range(3):
            await ws.send(b"%d" % i)
            assert await ws.receive() == b"%d" % i
        await trio.sleep(0.5)
        await ws.send(b"after pings")
        assert await ws.receive() == b"after pings"
        assert ws.pings  # the server pinged, and the tunnel still works
    assert handbacks == []  # never in the hub


async def test_cancelling_the_server_closes_hub_tunnels_with_1001(nursery: trio.Nursery) -> None:
    port = await echo_port(nursery)
    async with trio.open_nursery() as inner:
        server = await start_server(inner, route(port))
        async with open_websocket(server.url("/ws/", scheme="ws")) as ws:
            await ws.send(b"x")
            assert await ws.receive() == b"x"
            inner.cancel_scope.cancel()
            assert await ws.wait_closed() == 1001


async def test_a_failing_handler_fails_its_tunnel_not_the_server(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, handbacks: list[HandBack], hub_switch: bool
) -> None:
    """A bug in the fast path ends that tunnel with 1011; the hub and the server go on."""
    if not hub_switch:
        pytest.skip("a fault in the hub needs the hub")
    from wstrio._io.streams import tunnel as tunnel_module

    port = await echo_port(nursery)
    server = await start_server(nursery, route(port))
    original = tunnel_module.tunnel_handlers

    def broken(tunnel: object, client_fd: int, backend_fd: int) -> tuple[Handler, Handler, Handler]:
        forward, on_client, _on_backend = original(tunnel, client_fd, backend_fd)  # type: ignore[arg-type]

        def on_backend() -> HandBack | None:
            msg = "a bug in the fast path"
            raise RuntimeError(msg)

        return forward, on_client, on_backend

    monkeypatch.setattr(tunnel_module, "tunnel_handlers", broken)
    async with open_websocket(server.url("/ws/", scheme="ws")) as ws:
        await ws.send(b"x")
        assert await ws.wait_closed() == 1011
    assert [h.why for h in handbacks] == ["fault"]
    monkeypatch.setattr(tunnel_module, "tunnel_handlers", original)
    async with open_websocket(server.url("/ws/", scheme="ws")) as ws:
        await ws.send(b"y")
        assert await ws.receive() == b"y"
