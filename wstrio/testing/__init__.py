"""wstrio for tests: a pytest-trio plugin, a Trio WebSocket client, echo backends.

Installed with wstrio, the plugin is active in every pytest run (entry point
``pytest11``).  Its fixtures need pytest-trio (``trio_mode = true``, or mark
tests with ``@pytest.mark.trio``).

Three lines get a running gateway::

    async def test_echo(wstrio_server):
        async with open_websocket(wstrio_server.url("/ws/", scheme="ws")) as ws:
            await ws.send("hi")
            assert await ws.receive() == "hi"

Change what the server runs by overriding the ``wstrio_config`` fixture; it
may return a :class:`~wstrio.ServerConfig`, a mapping shaped like the TOML
file, or TOML text::

    @pytest.fixture
    def wstrio_config():
        return '''
        [[route]]
        path = "/ws/"
        handler = "wstunnel"
        [[route.backend]]
        app = "myproject.ws:handler"
        '''

Fixtures:

* ``wstrio_config`` — the configuration (default: ``/ws/`` tunnelled to an
  in-process echo backend, listening on 127.0.0.1 port 0).
* ``wstrio_server`` — a running :class:`~wstrio.Server`, stopped when the
  test ends.
* ``wstrio_url`` — ``ws://127.0.0.1:<port>`` of that server.
* ``wstrio_client`` — an open :class:`WebSocketClient` to ``/ws/``.
* ``wstrio_echo_backend`` — a TCP echo backend; ``(host, port)``.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import trio

from wstrio._config import Backend, ListenAddress, Route, ServerConfig
from wstrio._io.server import Server, serve
from wstrio._sansio.config.loader import config_from_mapping
from wstrio._sansio.http.request import Request
from wstrio.testing._client import ConnectionRejected, WebSocketClient, open_websocket, open_websocket_stream
from wstrio.testing._memory import MemoryConnector, MemoryListener

__all__ = [
    "ConnectionRejected",
    "MemoryConnector",
    "MemoryListener",
    "WebSocketClient",
    "as_config",
    "echo_app",
    "open_websocket",
    "open_websocket_stream",
    "serve_echo",
    "start_server",
    "wstrio_client",
    "wstrio_config",
    "wstrio_echo_backend",
    "wstrio_server",
    "wstrio_url",
]

ConfigLike = ServerConfig | Mapping[str, Any] | str


async def echo_app(stream: trio.abc.Stream, request: Request) -> None:
    """An in-process backend that sends back every byte it receives."""
    async for chunk in stream:
        await stream.send_all(chunk)


def as_config(config: ConfigLike, *, base_dir: str | Path | None = None) -> ServerConfig:
    """A :class:`~wstrio.ServerConfig` from a config, a mapping, or TOML text.

    A mapping or TOML text without ``server.listen`` listens on
    ``127.0.0.1:0`` (a free port).

    Raises:
        wstrio.ConfigError: the configuration is invalid.
    """
    if isinstance(config, ServerConfig):
        return config
    data: dict[str, Any] = tomllib.loads(config) if isinstance(config, str) else dict(config)
    server = dict(data.get("server", {}))
    server.setdefault("listen", ["127.0.0.1:0"])
    data["server"] = server
    return config_from_mapping(data, source="<test config>", base_dir=base_dir)


async def start_server(nursery: trio.Nursery, config: ConfigLike, *, base_dir: str | Path | None = None) -> Server:
    """Start wstrio in ``nursery`` and return it once it accepts connections.

    The server stops when ``nursery`` is cancelled (for pytest-trio's
    ``nursery`` fixture: when the test ends).
    """
    server: Server = await nursery.start(serve, as_config(config, base_dir=base_dir))
    return server


async def _echo_connection(stream: trio.abc.Stream) -> None:
    async with stream:
        try:
            async for chunk in stream:
                await stream.send_all(chunk)
        except trio.BrokenResourceError:
            pass


async def serve_echo(nursery: trio.Nursery, *, unix_path: str | Path | None = None) -> tuple[str, int] | str:
    """Start an echo backend in ``nursery``.

    Returns:
        ``(host, port)`` of a TCP echo server on 127.0.0.1, or the unix
        socket path when ``unix_path`` is given.
    """
    if unix_path is not None:
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await sock.bind(str(unix_path))
        sock.listen()
        await nursery.start(trio.serve_listeners, _echo_connection, [trio.SocketListener(sock)])
        return str(unix_path)
    listeners = await nursery.start(functools.partial(trio.serve_tcp, _echo_connection, 0, host="127.0.0.1"))
    host, port = listeners[0].socket.getsockname()[:2]
    return str(host), int(port)


@pytest.fixture
def wstrio_config() -> ConfigLike:
    """The configuration ``wstrio_server`` runs; override it in your conftest or test module."""
    return ServerConfig(
        listen=(ListenAddress("tcp", "127.0.0.1", 0),),
        routes=(Route(handler="wstunnel", path="/ws/", backends=(Backend(app=echo_app, min_procs=1, max_procs=1),)),),
    )


@pytest.fixture
async def wstrio_server(nursery: trio.Nursery, wstrio_config: ConfigLike) -> Server:
    """A running wstrio server; stopped (gracefully) when the test ends."""
    return await start_server(nursery, wstrio_config)


@pytest.fixture
def wstrio_url(wstrio_server: Server) -> str:
    """``ws://127.0.0.1:<port>`` of the running server (append the path)."""
    return wstrio_server.url("", scheme="ws")


@pytest.fixture
async def wstrio_client(wstrio_url: str) -> AsyncIterator[WebSocketClient]:
    """An open WebSocket to ``/ws/`` on the running server."""
    async with open_websocket(wstrio_url + "/ws/") as client:
        yield client


@pytest.fixture
async def wstrio_echo_backend(nursery: trio.Nursery) -> tuple[str, int]:
    """A TCP echo backend on 127.0.0.1; ``(host, port)``."""
    address = await serve_echo(nursery)
    assert isinstance(address, tuple)
    return address
