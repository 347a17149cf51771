"""SCGI's raw relay after a ``Status: 101`` goes through the hub (its backend is a plain socket).

A Trio SCGI backend answers 101 and echoes; the test spies on
:meth:`Hub.enter` (the hub's one entry) to see the relay enter it and why it
left, and runs again with the hub switched off: the same bytes either way.
"""

from __future__ import annotations

import functools

import pytest
import trio

from tests.helpers import read_head, start_server
from wstrio._io.streams.fastpath import hub as hub_module
from wstrio._io.streams.fastpath.handback import HandBack

REQUEST = b"GET /raw HTTP/1.1\r\nHost: test\r\nUpgrade: toy\r\nConnection: upgrade\r\n\r\n"


async def scgi_upgrading_backend(stream: trio.SocketStream) -> None:
    """Reads one SCGI request header, answers 101, echoes until EOF, then says bye."""
    async with stream:
        data = b""
        while b":" not in data:
            data += await stream.receive_some(65536)
        length, _, rest = data.partition(b":")
        while len(rest) < int(length) + 1:  # the netstring and its comma
            rest += await stream.receive_some(65536)
        assert rest[int(length) : int(length) + 1] == b","
        await stream.send_all(b"Status: 101 Switching Protocols\r\nUpgrade: toy\r\nConnection: upgrade\r\n\r\n")
        async for chunk in stream:
            await stream.send_all(chunk)
        await stream.send_all(b"bye")


@pytest.mark.parametrize("enabled", [True, False], ids=["hub", "no-hub"])
async def test_scgi_upgrade_relays_through_the_hub(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, handbacks: list[HandBack], enabled: bool
) -> None:
    monkeypatch.setattr(hub_module, "ENABLED", enabled)
    listeners = await nursery.start(functools.partial(trio.serve_tcp, scgi_upgrading_backend, 0))
    port = listeners[0].socket.getsockname()[1]
    route = {
        "path": "/",
        "handler": "scgi",
        "upgrade": True,
        "backend": [{"host": "127.0.0.1", "port": port, "check-local": False}],
    }
    server = await start_server(nursery, {"route": [route]})
    client = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with client:
        await client.send_all(REQUEST)
        assert (await read_head(client)).startswith(b"HTTP/1.1 101")
        for i in range(20):
            message = b"message %d;" % i
            await client.send_all(message)
            echoed = b""
            while len(echoed) < len(message):
                echoed += await client.receive_some(65536)
            assert echoed == message
        await client.send_eof()
        rest = b""
        with trio.fail_after(10):
            async for chunk in client:
                rest += chunk
    assert rest == b"bye"
    assert [h.why for h in handbacks] == (["client_eof"] if enabled else [])
