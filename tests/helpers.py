"""Shared helpers for wstrio's own tests.

* :func:`start_server` starts wstrio in a test's nursery from a config mapping
  (listening on 127.0.0.1 port 0 unless told otherwise).
* :func:`serve_echo_tcp` / :func:`serve_echo_unix` run a Trio echo backend.
* :func:`ws_client` runs a *blocking* function using the ``websockets`` sync
  client in a worker thread, so the independent client cannot share (or
  hide bugs in) our event loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import trio

import wstrio

T = TypeVar("T")


def make_config(data: Mapping[str, Any], base_dir: Path | None = None) -> wstrio.ServerConfig:
    """A config from a mapping; ``server.listen`` defaults to ``127.0.0.1:0``."""
    data = dict(data)
    server = dict(data.get("server", {}))
    server.setdefault("listen", ["127.0.0.1:0"])
    data["server"] = server
    return wstrio.config_from_mapping(data, base_dir=base_dir)


async def start_server(
    nursery: trio.Nursery,
    data: Mapping[str, Any] | wstrio.ServerConfig,
    base_dir: Path | None = None,
    **kwargs: Any,
) -> wstrio.Server:
    """Start wstrio in ``nursery``; returns the running :class:`wstrio.Server`."""
    config = data if isinstance(data, wstrio.ServerConfig) else make_config(data, base_dir)
    server: wstrio.Server = await nursery.start(functools.partial(wstrio.serve, config, **kwargs))
    return server


async def _echo(stream: trio.abc.Stream) -> None:
    async with stream:
        try:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass


async def serve_echo_tcp(nursery: trio.Nursery) -> int:
    """A TCP echo server on 127.0.0.1; returns its port."""
    listeners = await nursery.start(functools.partial(trio.serve_tcp, _echo, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def serve_echo_unix(nursery: trio.Nursery, path: Path) -> Path:
    """A unix-socket echo server at ``path``."""
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(128)
    listener = trio.SocketListener(sock)
    await nursery.start(trio.serve_listeners, _echo, [listener])
    return path


def echo_route(port: int, path: str = "/ws/", **extra: Any) -> dict[str, Any]:
    """A wstunnel route to a TCP backend on 127.0.0.1:``port``."""
    return {"path": path, "handler": "wstunnel", "backend": [{"host": "127.0.0.1", "port": port}], **extra}


async def ws_client(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking ``fn(*args)`` (using ``websockets.sync.client``) in a thread."""
    return await trio.to_thread.run_sync(functools.partial(fn, *args), abandon_on_cancel=True)
