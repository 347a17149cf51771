"""The public embedding API, used as a Trio application would."""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import pytest
import trio
import trio.lowlevel

import wstrio
from wstrio.testing import open_websocket

EXPORTED = {
    "Backend", "BackendConnector", "BackendError", "BackendExited", "BackendUnavailable", "BadRequest", "ConfigError",
    "HandshakeRejected", "HttpError", "ListenAddress", "BackendAddress", "Request",
    "Route", "Server", "ServerConfig", "ServerStatistics", "TlsConfig", "WstrioError", "__version__",
    "BackendStatistics", "MetricsConfig", "ReloadReport", "RouteCounters", "RouteStatistics",
    "config_from_mapping", "load_config", "open_listeners", "serve", "serve_listeners",
}  # fmt: skip


def test_public_names_come_from_private_modules() -> None:
    public = {name for name in dir(wstrio) if not name.startswith("_") or name == "__version__"}
    public -= {"testing"}  # the subpackage, when imported
    public = {n for n in public if not n.startswith("@")}  # pytest rewrites the plugin's package
    assert public == EXPORTED
    for name in EXPORTED - {"__version__"}:
        obj = getattr(wstrio, name)
        module = getattr(obj, "__module__", "wstrio._x")
        assert module.startswith("wstrio._"), f"{name} should be defined in a private module"


async def shout(stream: trio.abc.Stream, request: wstrio.Request) -> None:
    async for chunk in stream:
        await stream.send_all(bytes(chunk).upper())


def shout_config() -> wstrio.ServerConfig:
    return wstrio.ServerConfig(
        listen=(wstrio.ListenAddress("tcp", "127.0.0.1", 0),),
        routes=(wstrio.Route(handler="wstunnel", path="/shout/", backends=(wstrio.Backend(app=shout),)),),
    )


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def test_start_connect_cancel_leaves_nothing_behind() -> None:
    root = trio.lowlevel.current_root_task()
    assert root is not None
    tasks_before = len(root.child_nurseries)
    fds_before = open_fds()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(wstrio.serve, shout_config())
        assert isinstance(server, wstrio.Server)
        assert server.port > 0
        assert server.addresses[0].port == server.port
        async with open_websocket(server.url("/shout/", scheme="ws")) as ws:
            await ws.send("hello")
            assert await ws.receive() == "HELLO"
            assert server.statistics().connections_active == 1
            nursery.cancel_scope.cancel()
            # The server going away closes the tunnel with 1001.
            assert await ws.wait_closed() == 1001
    assert len(root.child_nurseries) == tasks_before
    await trio.lowlevel.checkpoint()  # let closed sockets be released
    assert open_fds() <= fds_before


async def test_serve_listeners_with_a_listener_of_our_own(nursery: trio.Nursery) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    server = await nursery.start(wstrio.serve_listeners, shout_config(), listeners)
    async with open_websocket(server.url("/shout/", scheme="ws")) as ws:
        await ws.send("abc")
        assert await ws.receive() == "ABC"


async def test_unix_listener_address_and_cleanup(tmp_path: Path) -> None:
    path = tmp_path / "wstrio.sock"
    config = attrs.evolve(shout_config(), listen=(wstrio.ListenAddress("unix", path=path),))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(wstrio.serve, config)
        assert server.addresses == (wstrio.ListenAddress("unix", path=path),)
        assert path.exists()
        with pytest.raises(RuntimeError):
            _ = server.port
        async with open_websocket("ws://localhost/shout/", unix_socket=str(path)) as ws:
            await ws.send("unix")
            assert await ws.receive() == "UNIX"
        nursery.cancel_scope.cancel()
    assert not path.exists(), "the socket file is removed on shutdown"


async def test_a_bound_port_is_reported_as_an_oserror_naming_the_address(nursery: trio.Nursery) -> None:
    server = await nursery.start(wstrio.serve, shout_config())
    taken = attrs.evolve(shout_config(), listen=(wstrio.ListenAddress("tcp", "127.0.0.1", server.port),))
    with pytest.raises(OSError, match=f"127.0.0.1:{server.port}"):
        await wstrio.serve(taken)


def test_config_built_in_python_is_the_same_as_from_a_mapping() -> None:
    from_mapping = wstrio.config_from_mapping(
        {
            "server": {"listen": ["127.0.0.1:0"]},
            "route": [
                {"path": "/shout/", "handler": "wstunnel", "backend": [{"app": "tests.integration.test_api:shout"}]}
            ],
        }
    )
    assert from_mapping.routes[0].backends[0].app is shout
    assert from_mapping.listen == shout_config().listen
