"""A first end-to-end check, written with wstrio's own pytest fixtures (dogfooding)."""

from __future__ import annotations

import pytest
from websockets.sync.client import connect

from tests.helpers import ws_client
from wstrio import Server
from wstrio.testing import WebSocketClient


@pytest.fixture
def wstrio_config(wstrio_echo_backend: tuple[str, int]) -> dict[str, object]:
    host, port = wstrio_echo_backend
    return {"route": [{"path": "/ws/", "handler": "wstunnel", "backend": [{"host": host, "port": port}]}]}


async def test_text_round_trip_with_an_independent_client(wstrio_server: Server) -> None:
    def client(url: str) -> list[str]:
        with connect(url) as ws:
            out = []
            for i in range(3):
                ws.send(f"hello {i}")
                out.append(str(ws.recv(timeout=10)))
            return out

    assert await ws_client(client, wstrio_server.url("/ws/", scheme="ws")) == ["hello 0", "hello 1", "hello 2"]


async def test_the_fixture_client(wstrio_client: WebSocketClient) -> None:
    await wstrio_client.send("ping?")
    assert await wstrio_client.receive() == "ping?"
    assert await wstrio_client.close(4000) == 1000
