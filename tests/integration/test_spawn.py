"""Spawned backends (``bin-path``): real processes, their sockets and their ends."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosed

import wstrio
from tests.helpers import (
    EXAMPLES,
    missing_tool,
    notify_socket,
    pid_alive,
    serve_echo_unix,
    start_cli_server,
    start_server,
    toml_string,
    wait_pid_gone,
    write_python_backend,
    ws_backend_pid,
    ws_client,
    ws_connect,
    ws_lines,
)

COUNT = EXAMPLES / "count"
needs_perl = pytest.mark.skipif(missing_tool("perl"), reason="perl is not installed")


def spawn_route(bin_path: Path | str, sock: Path, **backend: Any) -> dict[str, Any]:
    return {
        "path": "/ws/",
        "handler": "wstunnel",
        "backend": [{"socket": str(sock), "bin-path": str(bin_path), "max-procs": 1, **backend}],
    }


async def spawn_server(nursery: trio.Nursery, bin_path: Path | str, sock: Path, **backend: Any) -> wstrio.Server:
    config = {"server": {"shutdown-timeout": 2}, "route": [spawn_route(bin_path, sock, **backend)]}
    return await start_server(nursery, config)


LINES = [f"{i}\n" for i in range(1, 6)]


@needs_perl
async def test_seed_echo_pl_round_trips_lines(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await spawn_server(nursery, COUNT / "echo.pl", tmp_path / "echo.sock")
    assert (tmp_path / "echo.sock-0").exists(), "wstrio names the socket <socket>-0, as lighttpd"
    assert await ws_client(ws_lines, server.url("/ws/", scheme="ws"), LINES) == LINES
    # echo.pl serves one client at a time, each in turn.
    assert await ws_client(ws_lines, server.url("/ws/", scheme="ws"), ["again\n"]) == ["again\n"]


@needs_perl
@pytest.mark.slow
async def test_seed_echo_incremental_pl(nursery: trio.Nursery, tmp_path: Path) -> None:
    # It echoes what it read once a second, five times, then closes: 1001.
    server = await spawn_server(nursery, COUNT / "echo-incremental.pl", tmp_path / "inc.sock")

    def client(url: str) -> tuple[list[str], int | None]:
        echoes = []
        with ws_connect(url) as ws:
            for line in LINES:
                ws.send(line)
                echoes.append(str(ws.recv(timeout=10)))
            try:
                ws.recv(timeout=10)
            except ConnectionClosed as exc:
                return echoes, exc.rcvd.code if exc.rcvd else None
            return echoes, -1

    echoes, code = await ws_client(client, server.url("/ws/", scheme="ws"))
    assert echoes == LINES
    assert code == 1001


async def test_example_echo_py_round_trips_lines(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await spawn_server(nursery, COUNT / "echo.py", tmp_path / "echo-py.sock")
    url = server.url("/ws/", scheme="ws")
    assert await ws_client(ws_lines, url, LINES) == LINES

    # One process serves several clients at once.
    results: list[list[str]] = []

    async def one(i: int) -> None:
        results.append(await ws_client(ws_lines, url, [f"client {i}\n", "bye\n"]))

    async with trio.open_nursery() as clients:
        for i in range(3):
            clients.start_soon(one, i)
    assert sorted(r[0] for r in results) == ["client 0\n", "client 1\n", "client 2\n"]


async def test_children_are_stopped_with_the_server(tmp_path: Path) -> None:
    backend = write_python_backend(tmp_path / "backend.py")
    async with trio.open_nursery() as nursery:
        server = await spawn_server(nursery, backend, tmp_path / "b.sock")
        pid = await ws_client(ws_backend_pid, server.url("/ws/", scheme="ws"))
        assert pid_alive(pid)
        nursery.cancel_scope.cancel()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped *and* reaped: no zombie left behind
    assert not (tmp_path / "b.sock-0").exists()


async def test_a_child_that_exits_is_restarted(nursery: trio.Nursery, tmp_path: Path) -> None:
    backend = write_python_backend(tmp_path / "backend.py")
    started = await notify_socket(nursery, tmp_path / "n.sock")
    env = {"WSTRIO_TEST_NOTIFY": str(tmp_path / "n.sock")}
    server = await spawn_server(nursery, backend, tmp_path / "b.sock", **{"bin-environment": env})
    url = server.url("/ws/", scheme="ws")
    first = await started.receive()
    assert await ws_client(ws_backend_pid, url) == first

    def make_it_exit() -> int | None:
        with ws_connect(url) as ws:
            ws.send("exit\n")
            try:
                ws.recv(timeout=10)
            except ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd else None
            return -1

    assert await ws_client(make_it_exit) == 1001  # the backend's EOF
    second = await started.receive()  # restarted by wstrio
    assert second != first
    await wait_pid_gone(first)
    assert await ws_client(ws_backend_pid, url) == second
    assert await ws_client(ws_lines, url, ["still echoing\n"]) == ["still echoing\n"]


async def test_missing_bin_path_fails_startup_clearly(nursery: trio.Nursery, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-program"
    with pytest.raises(ExceptionGroup) as info:
        await spawn_server(nursery, missing, tmp_path / "b.sock")
    assert info.group_contains(wstrio.BackendExited, match="no-such-program")
    assert not (tmp_path / "b.sock-0").exists()


async def test_bin_path_not_executable_fails_startup_clearly(nursery: trio.Nursery, tmp_path: Path) -> None:
    script = tmp_path / "backend.py"
    script.write_text("print('never runs')\n")
    script.chmod(0o644)
    with pytest.raises(ExceptionGroup) as info:
        await spawn_server(nursery, script, tmp_path / "b.sock")
    assert info.group_contains(wstrio.BackendExited, match="backend.py")


async def test_cli_missing_bin_path_exits_1_with_message(tmp_path: Path) -> None:
    config = tmp_path / "wstrio.toml"
    config.write_text(
        '[server]\nlisten = ["127.0.0.1:0"]\n\n[[route]]\npath = "/ws/"\nhandler = "wstunnel"\n'
        '  [[route.backend]]\n  socket = "b.sock"\n  bin-path = "no-such-program"\n'
    )
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "wstrio", "serve", str(config)], capture_stderr=True, check=False
        )
    assert result.returncode == 1
    assert b"no-such-program" in result.stderr
    assert b"Traceback" not in result.stderr


def _stale_unix_socket(path: Path) -> None:
    """Leave a socket file nobody listens on, as a crashed run would."""
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()
    assert path.exists()


async def test_stale_backend_socket_file_is_replaced(nursery: trio.Nursery, tmp_path: Path) -> None:
    _stale_unix_socket(tmp_path / "b.sock-0")
    backend = write_python_backend(tmp_path / "backend.py")
    server = await spawn_server(nursery, backend, tmp_path / "b.sock")
    assert pid_alive(await ws_client(ws_backend_pid, server.url("/ws/", scheme="ws")))


async def test_stale_listener_socket_file_is_replaced(nursery: trio.Nursery, tmp_path: Path) -> None:
    sock = tmp_path / "w.sock"
    _stale_unix_socket(sock)
    server = await start_server(nursery, {"server": {"listen": [f"unix:{sock}"]}})
    assert server.addresses[0].path == sock
    stream = await trio.open_unix_socket(str(sock))
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        with trio.fail_after(10):
            assert (await stream.receive_some(100)).startswith(b"HTTP/1.1 404 ")


async def test_a_file_that_is_not_a_socket_is_never_replaced(nursery: trio.Nursery, tmp_path: Path) -> None:
    precious = tmp_path / "b.sock-0"
    precious.write_text("precious data\n")
    backend = write_python_backend(tmp_path / "backend.py")
    with pytest.raises(ExceptionGroup) as info:
        await spawn_server(nursery, backend, tmp_path / "b.sock")
    assert info.group_contains(wstrio.BackendExited, match="not a socket")
    assert precious.read_text() == "precious data\n"


async def test_a_listener_wstrio_did_not_start_is_never_adopted(nursery: trio.Nursery, tmp_path: Path) -> None:
    # lighttpd uses whatever answers at <socket>-0 and then never supervises
    # it (an orphan of an earlier run, say): wstrio refuses to start, names
    # who holds the socket, and leaves it alone.
    await serve_echo_unix(nursery, tmp_path / "b.sock-0")
    with pytest.raises(ExceptionGroup) as info:
        await spawn_server(nursery, tmp_path / "never-started", tmp_path / "b.sock")
    assert info.group_contains(wstrio.BackendExited, match=rf"already in use by pid {os.getpid()} \(")
    with socket.socket(socket.AF_UNIX) as probe:
        probe.connect(str(tmp_path / "b.sock-0"))  # still there, still answering


async def test_backend_dies_when_wstrio_is_killed(nursery: trio.Nursery, tmp_path: Path) -> None:
    # PR_SET_PDEATHSIG: even SIGKILL of wstrio (no chance to clean up) ends the child.
    backend = write_python_backend(tmp_path / "backend.py")
    config = tmp_path / "wstrio.toml"
    config.write_text(
        '[server]\nlisten = ["127.0.0.1:0"]\n\n[[route]]\npath = "/ws/"\nhandler = "wstunnel"\n'
        f"  [[route.backend]]\n  socket = {toml_string(tmp_path / 'b.sock')}\n"
        f"  bin-path = {toml_string(backend)}\n  max-procs = 1\n"
    )
    cli = await start_cli_server(nursery, config)
    pid = await ws_client(ws_backend_pid, f"ws://127.0.0.1:{cli.port}/ws/")
    assert pid_alive(pid)
    assert await cli.stop(signal.SIGKILL) == -signal.SIGKILL
    await wait_pid_gone(pid)
