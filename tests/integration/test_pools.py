"""Backend pools end to end: balancing, failover, adaptive spawning, on-demand start."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
import trio

from tests.helpers import PID_TAGGING_BACKEND, write_python_backend
from wstrio.testing import ConnectionRejected, open_websocket, start_server

# A backend program for bin-path pools: accepts on fd 0 and, per connection,
# answers every chunk with "<pid>:<chunk>" so tests can see which process served.


def write_pid_echo(tmp_path: Path) -> Path:
    return write_python_backend(tmp_path / "pid_echo.py", PID_TAGGING_BACKEND)


async def _tagged_echo(tag: bytes, stream: trio.SocketStream) -> None:
    async with stream:
        try:
            async for chunk in stream:
                await stream.send_all(tag + b":" + chunk)
        except trio.BrokenResourceError:
            pass


async def start_tagged_backends(nursery: trio.Nursery, count: int) -> list[tuple[int, trio.CancelScope]]:
    """TCP echo backends answering "<index>:<data>"; returns (port, cancel scope) pairs."""
    out = []
    for i in range(count):
        scope = trio.CancelScope()

        async def run(
            tag: bytes, scope: trio.CancelScope, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
        ) -> None:
            with scope:
                listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
                task_status.started(listeners[0].socket.getsockname()[1])
                await trio.serve_listeners(functools.partial(_tagged_echo, tag), listeners)

        port = await nursery.start(run, str(i).encode(), scope)
        out.append((port, scope))
    return out


async def ask(url: str, message: str = "x") -> str:
    async with open_websocket(url) as ws:
        await ws.send(message)
        reply = await ws.receive()
        assert isinstance(reply, str)
        return reply


@pytest.mark.parametrize("balance", ["fair", "least-connection", "round-robin", "hash", "sticky"])
async def test_failover_hides_a_dead_backend(nursery: trio.Nursery, balance: str) -> None:
    backends = await start_tagged_backends(nursery, 3)
    config = {
        "route": [
            {
                "path": "/ws/",
                "handler": "wstunnel",
                "balance": balance,
                "backend": [{"host": "127.0.0.1", "port": port, "disable-time": 60} for port, _ in backends],
            }
        ]
    }
    server = await start_server(nursery, config)
    url = server.url("/ws/", scheme="ws")
    before = {(await ask(url)).split(":")[0] for _ in range(6)}
    assert before <= {"0", "1", "2"}
    # Kill the backend that served the last request (the one hash/sticky prefer).
    victim = int((await ask(url)).split(":")[0])
    backends[victim][1].cancel()
    await trio.sleep(0.05)  # let the listener close
    # Every client still gets an answer; none from the dead backend.
    served = {(await ask(url)).split(":")[0] for _ in range(6)}
    assert str(victim) not in served
    assert served


async def test_round_robin_uses_every_backend(nursery: trio.Nursery) -> None:
    backends = await start_tagged_backends(nursery, 3)
    config = {
        "route": [
            {
                "path": "/ws/",
                "handler": "wstunnel",
                "balance": "round-robin",
                "backend": [{"host": "127.0.0.1", "port": port} for port, _ in backends],
            }
        ]
    }
    server = await start_server(nursery, config)
    url = server.url("/ws/", scheme="ws")
    tags = [(await ask(url)).split(":")[0] for _ in range(6)]
    assert tags == ["0", "1", "2", "0", "1", "2"]


async def test_all_backends_down_gives_503(nursery: trio.Nursery) -> None:
    backends = await start_tagged_backends(nursery, 2)
    for _, scope in backends:
        scope.cancel()
    await trio.sleep(0.05)
    config = {
        "route": [
            {
                "path": "/ws/",
                "handler": "wstunnel",
                "backend": [{"host": "127.0.0.1", "port": port} for port, _ in backends],
            }
        ]
    }
    server = await start_server(nursery, config)
    with pytest.raises(ConnectionRejected) as info:
        await ask(server.url("/ws/", scheme="ws"))
    assert info.value.status_code == 503


@pytest.mark.slow
async def test_adaptive_pool_grows_under_load_and_shrinks_when_idle(nursery: trio.Nursery, tmp_path: Path) -> None:
    program = write_pid_echo(tmp_path)
    config = {
        "route": [
            {
                "path": "/ws/",
                "handler": "wstunnel",
                "backend": [
                    {
                        "socket": str(tmp_path / "pool.sock"),
                        "bin-path": str(program),
                        "min-procs": 1,
                        "max-procs": 3,
                        "max-load-per-proc": 1,
                        "idle-timeout": 1,
                    }
                ],
            }
        ]
    }
    server = await start_server(nursery, config)
    url = server.url("/ws/", scheme="ws")
    pids: set[str] = set()
    async with open_websocket(url) as a, open_websocket(url) as b:
        # Two connections on one process: load 2 > max-load-per-proc 1, so
        # the once-a-second check starts a second process.
        await a.send("a")
        pids.add(str(await a.receive()).split(":")[0])
        await b.send("b")
        pids.add(str(await b.receive()).split(":")[0])
        with trio.fail_after(10):
            while not (tmp_path / "pool.sock-1").exists():  # noqa: ASYNC110 - polling the file system
                await trio.sleep(0.1)
        async with open_websocket(url) as c:
            await c.send("c")
            pids.add(str(await c.receive()).split(":")[0])
    assert len(pids) == 2, "the third connection should go to the new, idle process"
    # All closed: the surplus process is stopped after idle-timeout.
    with trio.fail_after(15):
        while (tmp_path / "pool.sock-1").exists():  # noqa: ASYNC110 - polling the file system
            await trio.sleep(0.1)
    assert (tmp_path / "pool.sock-0").exists(), "min-procs must stay running"


async def test_min_procs_zero_starts_on_demand(nursery: trio.Nursery, tmp_path: Path) -> None:
    program = write_pid_echo(tmp_path)
    config = {
        "route": [
            {
                "path": "/ws/",
                "handler": "wstunnel",
                "backend": [
                    {"socket": str(tmp_path / "lazy.sock"), "bin-path": str(program), "min-procs": 0, "max-procs": 2}
                ],
            }
        ]
    }
    server = await start_server(nursery, config)
    assert not (tmp_path / "lazy.sock-0").exists()
    reply = await ask(server.url("/ws/", scheme="ws"), "hello")
    pid = int(reply.split(":")[0])
    assert reply.endswith(":hello")
    assert (tmp_path / "lazy.sock-0").exists()
    os.kill(pid, 0)  # the process is running


async def test_a_unix_backend_without_bin_path_is_used_at_its_exact_path(nursery: trio.Nursery, tmp_path: Path) -> None:
    from wstrio.testing import serve_echo

    path = await serve_echo(nursery, unix_path=tmp_path / "plain.sock")
    config = {"route": [{"path": "/ws/", "handler": "wstunnel", "backend": [{"socket": str(path)}]}]}
    server = await start_server(nursery, config)
    assert await ask(server.url("/ws/", scheme="ws"), "exact") == "exact"
