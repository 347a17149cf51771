"""The proxy's raw relay on the hub fast path, and its hand-backs, over real sockets.

Each test runs with the hub on and off (its private switch): the same
assertions hold on both paths.
"""

from __future__ import annotations

import functools
import hashlib

import pytest
import trio

from tests.helpers import read_head
from wstrio._io.streams.fastpath.handback import HandBack
from wstrio.testing import start_server

pytestmark = pytest.mark.usefixtures("hub_switch")


SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: raw\r\nConnection: upgrade\r\n\r\n"
REQUEST = b"GET /raw HTTP/1.1\r\nHost: test\r\nUpgrade: raw\r\nConnection: upgrade\r\n\r\n"
BLOCK = bytes(range(256)) * 256  # 64 KiB


async def upgrading_backend(mode: str, stream: trio.SocketStream) -> None:
    """Answers any request with a 101, then floods, or echoes until EOF and says goodbye."""
    async with stream:
        await read_head(stream)
        await stream.send_all(SWITCH)
        if mode == "flood":
            # Let the proxy read the 101 alone: bytes read behind it keep a
            # relay out of the hub (its leftovers go first, on the pumps).
            await trio.sleep(0.2)
            for _ in range(128):  # 8 MiB
                await stream.send_all(BLOCK)
            return
        received = 0
        async for chunk in stream:
            received += len(chunk)
            await stream.send_all(chunk)
        # The client's EOF reached us: answer after it, then close.
        await stream.send_all(b"goodbye after %d bytes" % received)


async def proxy_to(nursery: trio.Nursery, mode: str) -> int:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, functools.partial(upgrading_backend, mode), 0))
    port = listeners[0].socket.getsockname()[1]
    server = await start_server(
        nursery,
        {
            "route": [
                {"path": "/", "handler": "proxy", "upgrade": True, "backend": [{"host": "127.0.0.1", "port": port}]}
            ]
        },
    )
    return server.port


async def test_a_flood_under_backpressure_arrives_whole(
    nursery: trio.Nursery, hub_switch: bool, handbacks: list[HandBack]
) -> None:
    port = await proxy_to(nursery, "flood")
    client = await trio.open_tcp_stream("127.0.0.1", port)
    async with client:
        await client.send_all(REQUEST)
        assert (await read_head(client)).startswith(b"HTTP/1.1 101")
        # Read nothing for a while: the relay's writes to us fill the socket,
        # and the hub must hand the relay to its pump tasks.
        await trio.sleep(0.3)
        digest = hashlib.sha256()
        total = 0
        with trio.fail_after(30):
            async for chunk in client:
                digest.update(chunk)
                total += len(chunk)
    assert total == 128 * len(BLOCK)
    assert digest.digest() == hashlib.sha256(BLOCK * 128).digest()
    assert [h.why for h in handbacks] == (["blocked"] if hub_switch else [])


async def test_half_close_passes_through_and_the_other_direction_goes_on(
    nursery: trio.Nursery, hub_switch: bool, handbacks: list[HandBack]
) -> None:
    port = await proxy_to(nursery, "echo")
    client = await trio.open_tcp_stream("127.0.0.1", port)
    async with client:
        await client.send_all(REQUEST)
        assert (await read_head(client)).startswith(b"HTTP/1.1 101")
        sent = 0
        for i in range(100):
            message = b"message %d;" % i
            await client.send_all(message)
            sent += len(message)
            echoed = b""
            while len(echoed) < len(message):
                echoed += await client.receive_some(65536)
            assert echoed == message
        await client.send_eof()  # the hub sees our EOF and hands the relay back
        rest = b""
        with trio.fail_after(10):
            async for chunk in client:
                rest += chunk
    assert rest == b"goodbye after %d bytes" % sent
    assert [h.why for h in handbacks] == (["client_eof"] if hub_switch else [])
