"""The pytest plugin's fixtures, with each form of wstrio_config override."""

from __future__ import annotations

import pytest

from wstrio import Backend, ListenAddress, Route, Server, ServerConfig
from wstrio.testing import ConnectionRejected, echo_app, open_websocket


async def test_default_config_is_an_echo_on_ws(wstrio_server: Server, wstrio_url: str) -> None:
    assert wstrio_url == f"ws://127.0.0.1:{wstrio_server.port}"
    async with open_websocket(wstrio_url + "/ws/") as ws:
        await ws.send("default")
        assert await ws.receive() == "default"


class TestTomlText:
    @pytest.fixture
    def wstrio_config(self) -> str:
        return """
        [[route]]
        path = "/chat/"
        handler = "wstunnel"
        frame-type = "binary"
          [[route.backend]]
          app = "wstrio.testing:echo_app"
        """

    async def test_binary_frames(self, wstrio_url: str) -> None:
        async with open_websocket(wstrio_url + "/chat/") as ws:
            await ws.send("as text")
            assert await ws.receive() == b"as text"


class TestServerConfigObject:
    @pytest.fixture
    def wstrio_config(self) -> ServerConfig:
        return ServerConfig(
            listen=(ListenAddress("tcp", "127.0.0.1", 0),),
            routes=(
                Route(
                    handler="wstunnel", path="/a/", origins=("https://ok.example",), backends=(Backend(app=echo_app),)
                ),
            ),
        )

    async def test_origin_policy_applies(self, wstrio_url: str) -> None:
        with pytest.raises(ConnectionRejected) as info:
            async with open_websocket(wstrio_url + "/a/"):
                pass
        assert info.value.status_code == 400  # no Origin on a route that checks origins
        async with open_websocket(wstrio_url + "/a/", origin="https://ok.example") as ws:
            await ws.send("ok")
            assert await ws.receive() == "ok"


class TestInvalidConfig:
    @pytest.fixture
    def wstrio_config(self) -> dict[str, object]:
        return {"route": [{"path": "/x/", "handler": "wstunnel", "backend": [{"host": "h", "port": 70000}]}]}

    def test_errors_name_the_key(self, wstrio_config: dict[str, object]) -> None:
        from wstrio import ConfigError
        from wstrio.testing import as_config

        with pytest.raises(ConfigError, match=r"route\[0\]\.backend\[0\]\.port"):
            as_config(wstrio_config)
