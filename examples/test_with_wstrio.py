"""Copy this file into your project to test WebSocket code against a real gateway.

Needs wstrio (``pip install /path/to/wstrio-checkout``: it is not on PyPI yet),
``pip install pytest pytest-trio`` and, in your pytest
configuration, ``trio_mode = true`` (or mark each test ``@pytest.mark.trio``).
The ``wstrio_*`` fixtures come from wstrio's pytest plugin, which is active
as soon as wstrio is installed.
"""

from __future__ import annotations

import pytest

from wstrio.testing import ConnectionRejected, WebSocketClient, open_websocket


async def test_echo_in_three_lines(wstrio_client: WebSocketClient) -> None:
    # The default wstrio_config tunnels /ws/ to an in-process echo backend.
    await wstrio_client.send("hello")
    assert await wstrio_client.receive() == "hello"


async def test_close_codes(wstrio_client: WebSocketClient) -> None:
    # Whatever code the client closes with, wstrio answers 1000 (as lighttpd).
    assert await wstrio_client.close(4000) == 1000


class TestMyOwnConfig:
    """Override ``wstrio_config`` to run your own routes (TOML text, a mapping, or a ServerConfig)."""

    @pytest.fixture
    def wstrio_config(self) -> str:
        return """
        [[route]]
        path = "/chat/"
        handler = "wstunnel"
        origins = ["https://example.com"]

          [[route.backend]]
          app = "wstrio.testing:echo_app"
        """

    async def test_allowed_origin(self, wstrio_url: str) -> None:
        async with open_websocket(wstrio_url + "/chat/", origin="https://example.com") as ws:
            await ws.send("hi")
            assert await ws.receive() == "hi"

    async def test_refused_origin(self, wstrio_url: str) -> None:
        with pytest.raises(ConnectionRejected) as info:
            async with open_websocket(wstrio_url + "/chat/", origin="https://evil.example"):
                pass
        assert info.value.status_code == 403


class TestTcpBackend:
    """Tunnel to a real TCP backend: here wstrio's own echo server fixture."""

    @pytest.fixture
    def wstrio_config(self, wstrio_echo_backend: tuple[str, int]) -> dict[str, object]:
        host, port = wstrio_echo_backend
        return {
            "route": [
                {
                    "path": "/ws/",
                    "handler": "wstunnel",
                    "frame-type": "binary",
                    "backend": [{"host": host, "port": port}],
                }
            ]
        }

    async def test_binary(self, wstrio_client: WebSocketClient) -> None:
        await wstrio_client.send(b"\x00\x01\x02")
        assert await wstrio_client.receive() == b"\x00\x01\x02"
