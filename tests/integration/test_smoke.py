"""A first end-to-end check: a websockets client through wstrio to a TCP echo backend."""

from __future__ import annotations

import trio
from websockets.sync.client import connect

from tests.helpers import echo_route, serve_echo_tcp, start_server, ws_client


async def test_text_round_trip(nursery: trio.Nursery) -> None:
    port = await serve_echo_tcp(nursery)
    server = await start_server(nursery, {"route": [echo_route(port)]})

    def client(url: str) -> list[str]:
        with connect(url) as ws:
            out = []
            for i in range(3):
                ws.send(f"hello {i}")
                out.append(str(ws.recv(timeout=10)))
            return out

    assert await ws_client(client, server.url("/ws/", scheme="ws")) == ["hello 0", "hello 1", "hello 2"]
