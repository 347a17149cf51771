"""Connecting to a backend: a full accept queue is a failed connect; wstrio's own shortage blames no backend.

Issue 13, defects 2 and 3:

* A unix socket whose listen backlog is full makes a non-blocking
  ``connect()`` fail with EAGAIN, which trio took for "in progress": the
  client got a 101 with nothing behind it, then CLOSE 1011, the backend was
  never disabled and no other was tried.  Now it is a failed connect: the
  next backend serves, or the handshake gets 503.
* Out of file descriptors (EMFILE) when opening a backend socket disabled
  every healthy backend for ``disable-time``.  Now it is wstrio's own
  shortage: 503 at once, no backend marked down, an ERROR once per episode
  and a WARNING when it is over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.helpers import (
    RawClient,
    RawClients,
    client_frame,
    serve_echo_tcp,
    serve_echo_unix,
    start_server,
    unused_tcp_port,
)

pytestmark = pytest.mark.usefixtures("hub_switch")


@contextlib.contextmanager
def full_unix_listener(path: Path) -> Iterator[None]:
    """A unix socket that never accepts, its accept queue filled up."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(0)
    waiting: list[socket.socket] = []
    try:
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.connect(str(path))
            except BlockingIOError:
                sock.close()
                break
            waiting.append(sock)
        yield
    finally:
        for sock in waiting:
            sock.close()
        listener.close()


def unix_route(*paths: Path) -> dict[str, object]:
    return {"path": "/ws/", "handler": "wstunnel", "backend": [{"socket": str(p)} for p in paths]}


async def test_a_full_accept_queue_is_503_never_101(
    nursery: trio.Nursery, raw: RawClients, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    full = tmp_path / "full.sock"
    with full_unix_listener(full):
        server = await start_server(nursery, {"server": {"listen": ["127.0.0.1:0"]}, "route": [unix_route(full)]})
        client = await raw.tcp(server.port)
        response = await client.ws_handshake()
        assert response.status == 503
    assert any("accept queue is full" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


async def test_a_full_accept_queue_fails_over_to_the_next_backend(
    nursery: trio.Nursery, raw: RawClients, tmp_path: Path
) -> None:
    full, healthy = tmp_path / "full.sock", tmp_path / "echo.sock"
    await serve_echo_unix(nursery, healthy)
    with full_unix_listener(full):
        config = {"server": {"listen": ["127.0.0.1:0"]}, "route": [unix_route(full, healthy)]}
        server = await start_server(nursery, config)
        for _ in range(3):
            client = await raw.tcp(server.port)
            assert (await client.ws_handshake()).status == 101
            await client.send(client_frame(0x1, b"behind it\n"))
            assert (await client.read_frame()).payload == b"behind it\n"
            await client.aclose()


@contextlib.contextmanager
def out_of_fds() -> Iterator[None]:
    """Make every new file descriptor of this process fail with EMFILE (until the block ends)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    fillers: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(fds) + 1, hard))
    try:
        with contextlib.suppress(OSError):
            while True:  # fill the holes below the limit
                fillers.append(os.open("/dev/null", os.O_RDONLY))
        yield
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_running_out_of_fds_marks_no_backend_down(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    ports = [await serve_echo_tcp(nursery) for _ in range(3)]
    route = {
        "path": "/ws/",
        "handler": "wstunnel",
        "backend": [{"host": "127.0.0.1", "port": p, "disable-time": 3600} for p in ports],
    }
    server = await start_server(nursery, {"server": {"listen": ["127.0.0.1:0"]}, "route": [route]})
    clients = [await RawClient.tcp(server.port) for _ in range(3)]
    caplog.set_level(logging.INFO, "wstrio")
    try:
        with out_of_fds():
            for client in clients[:2]:
                response = await client.ws_handshake()
                assert response.status == 503
        # The shortage is over; no backend was blamed, so the next handshake
        # is served at once (disable-time is an hour).
        assert (await clients[2].ws_handshake()).status == 101
        await clients[2].send(client_frame(0x1, b"fine\n"))
        assert (await clients[2].read_frame()).payload == b"fine\n"
    finally:
        for client in clients:
            await client.aclose()
    errors = [r.getMessage() for r in caplog.records if r.name == "wstrio.backend" and r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors  # once per episode, not per request
    assert "wstrio's own limit" in errors[0]
    assert not [r for r in caplog.records if "disabled for" in r.getMessage()]
    assert any("can be opened again" in r.getMessage() for r in caplog.records)


async def test_a_refused_backend_is_logged_as_refused(
    nursery: trio.Nursery, raw: RawClients, caplog: pytest.LogCaptureFixture
) -> None:
    """The log says why (issue 14, item 8): not trio's "all attempts to connect ... failed"."""
    route = {"path": "/ws/", "handler": "wstunnel", "backend": [{"host": "127.0.0.1", "port": unused_tcp_port()}]}
    server = await start_server(nursery, {"server": {"listen": ["127.0.0.1:0"]}, "route": [route]})
    client = await raw.tcp(server.port)
    assert (await client.ws_handshake()).status == 503
    warnings = [r.getMessage() for r in caplog.records if r.name == "wstrio.backend" and r.levelno == logging.WARNING]
    assert warnings
    assert "Connection refused" in warnings[0], warnings
