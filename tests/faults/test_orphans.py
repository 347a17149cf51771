"""Nothing wstrio starts outlives it, and nothing it did not start is adopted (issue 13, defect 6).

Before: ``PR_SET_PDEATHSIG`` killed a ``bin-path`` process when wstrio was
SIGKILLed, but not that process's own children, so a wrapper script's child
survived with the listening socket; a restarted wstrio "used it instead of
spawning" and never supervised it again.  A wrapper that died left its child
running too (its group was not signalled once the leader was gone), and CGI
scripts survived a SIGKILL of wstrio.  Now a keeper process kills every
group wstrio started when wstrio dies, exited leaders' groups are emptied
before a restart, and a listener wstrio did not start is an error.

Real processes throughout: ``python -m wstrio serve`` killed with SIGKILL,
``/bin/sh`` wrappers that fork (no ``exec``), and Python backends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from websockets.exceptions import InvalidStatus

from tests.helpers import (
    PID_ECHO_BACKEND,
    RawClient,
    pid_alive,
    start_cli_server,
    start_server,
    toml_string,
    unused_tcp_port,
    wait_pid_gone,
    write_python_backend,
    ws_backend_pid,
    ws_client,
)
from tests.integration.gateway_support import make_docroot

pytestmark = pytest.mark.slow

IGNORES_SIGTERM = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"


def write_wrapper(tmp_path: Path, source: str = PID_ECHO_BACKEND) -> Path:
    """A ``/bin/sh`` wrapper that runs the real backend as its child (no ``exec``), as many do."""
    backend = write_python_backend(tmp_path / "backend.py", source)
    wrapper = tmp_path / "run-backend"
    wrapper.write_text(f"#!/bin/sh\n# no exec: the backend is this shell's child\n{backend}\necho never reached\n")
    wrapper.chmod(0o755)
    return wrapper


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


def keeper_of(pid: int) -> int | None:
    """The keeper process that serves wstrio process ``pid``, if one runs."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"wstrio-keeper" in argv and argv[-2:] == [str(pid).encode(), b""]:
                return int(entry)
    return None


def backend_lines(where: str, bin_path: Path, **extra: str) -> str:
    more = "".join(f"  {key} = {value}\n" for key, value in extra.items())
    return f"  [[route.backend]]\n  {where}\n  bin-path = {toml_string(bin_path)}\n  max-procs = 1\n{more}"


def wstunnel_config(tmp_path: Path, backend: str) -> Path:
    config = tmp_path / "wstrio.toml"
    config.write_text(
        '[server]\nlisten = ["127.0.0.1:0"]\n\n[[route]]\npath = "/ws/"\nhandler = "wstunnel"\n' + backend
    )
    return config


async def test_a_wrappers_child_dies_when_wstrio_is_killed(nursery: trio.Nursery, tmp_path: Path) -> None:
    wrapper = write_wrapper(tmp_path)
    config = wstunnel_config(tmp_path, backend_lines(f"socket = {toml_string(tmp_path / 'b.sock')}", wrapper))
    cli = await start_cli_server(nursery, config)
    child = await ws_client(ws_backend_pid, f"ws://127.0.0.1:{cli.port}/ws/")
    wrapper_pid = parent_of(child)
    assert wrapper_pid != cli.process.pid, "the backend must be the wrapper's child"
    keeper = keeper_of(cli.process.pid)
    assert keeper is not None, "a server that starts programs runs a keeper"
    assert await cli.stop(signal.SIGKILL) == -signal.SIGKILL
    await wait_pid_gone(wrapper_pid)  # PR_SET_PDEATHSIG
    await wait_pid_gone(child)  # the keeper: the death signal is not inherited
    await wait_pid_gone(keeper)  # and then it is gone too


async def test_cgi_scripts_die_when_wstrio_is_killed(nursery: trio.Nursery, tmp_path: Path) -> None:
    docroot = make_docroot(tmp_path)
    pids = tmp_path / "pids"
    script = docroot / "cgi" / "slow.py"
    # The script and a background job it started, both silent for minutes.
    script.write_text(
        f"#!{sys.executable}\nimport os, subprocess, time\n"
        f"job = subprocess.Popen([{sys.executable!r}, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pids)!r}, 'w').write('%d %d' % (os.getpid(), job.pid))\ntime.sleep(600)\n"
    )
    script.chmod(0o755)
    config = tmp_path / "wstrio.toml"
    config.write_text(
        f'[server]\nlisten = ["127.0.0.1:0"]\ndocument-root = {toml_string(docroot)}\n\n'
        '[[route]]\npath = "/cgi/"\nhandler = "cgi"\nread-timeout = 0\n'
        f'assign = {{ ".py" = {toml_string(sys.executable)} }}\n'
    )
    cli = await start_cli_server(nursery, config)
    client = await RawClient.tcp(cli.port)
    await client.send(b"GET /cgi/slow.py HTTP/1.1\r\nHost: x\r\n\r\n")
    with trio.fail_after(30):
        while not pids.exists() or " " not in pids.read_text():  # noqa: ASYNC110 - a file, no event
            await trio.sleep(0.05)
    script_pid, job_pid = map(int, pids.read_text().split())
    assert pid_alive(script_pid)
    assert pid_alive(job_pid)
    assert await cli.stop(signal.SIGKILL) == -signal.SIGKILL
    await wait_pid_gone(script_pid)
    await wait_pid_gone(job_pid)
    await client.aclose()


@pytest.mark.parametrize("kind", ["unix", "tcp"])
async def test_a_wrapper_that_dies_takes_its_child_and_is_restarted(
    nursery: trio.Nursery, tmp_path: Path, kind: str
) -> None:
    wrapper = write_wrapper(tmp_path)
    backend: dict[str, Any] = {"bin-path": str(wrapper), "max-procs": 1}
    if kind == "unix":
        backend["socket"] = str(tmp_path / "b.sock")
    else:
        backend |= {"host": "127.0.0.1", "port": unused_tcp_port()}
    server = await start_server(
        nursery,
        {"server": {"shutdown-timeout": 2}, "route": [{"path": "/ws/", "handler": "wstunnel", "backend": [backend]}]},
    )
    url = server.url("/ws/", scheme="ws")
    child = await ws_client(ws_backend_pid, url)
    wrapper_pid = parent_of(child)
    os.kill(wrapper_pid, signal.SIGKILL)  # the wrapper crashes; its child still holds the socket
    await wait_pid_gone(child)  # before: it ran on, unsupervised (TCP: and was adopted)
    with trio.fail_after(30):
        while True:
            try:
                again = await ws_client(ws_backend_pid, url)
            except (OSError, InvalidStatus):  # refused, or 503 while the new process starts
                await trio.sleep(0.1)
                continue
            if again != child:
                break
    assert parent_of(again) != wrapper_pid
    assert pid_alive(again)


async def test_an_orderly_stop_kills_what_ignores_the_kill_signal(tmp_path: Path) -> None:
    # The wrapper dies of SIGTERM; its child ignores it.  Before, the group
    # was not signalled again once its leader had exited.
    wrapper = write_wrapper(tmp_path, IGNORES_SIGTERM + PID_ECHO_BACKEND)
    route = {
        "path": "/ws/",
        "handler": "wstunnel",
        "backend": [{"socket": str(tmp_path / "b.sock"), "bin-path": str(wrapper), "max-procs": 1}],
    }
    async with trio.open_nursery() as inner:
        server = await start_server(inner, {"server": {"shutdown-timeout": 1}, "route": [route]})
        child = await ws_client(ws_backend_pid, server.url("/ws/", scheme="ws"))
        wrapper_pid = parent_of(child)
        inner.cancel_scope.cancel()
    assert not pid_alive(wrapper_pid)
    assert not pid_alive(child), "stopping the pool must kill the whole group, SIGKILL for what ignores SIGTERM"


async def test_serve_refuses_a_port_held_by_an_orphan(nursery: trio.Nursery, tmp_path: Path) -> None:
    # An earlier run's orphan (here: any program) listens on the backend's port.
    port = unused_tcp_port()
    orphan = subprocess.Popen(  # noqa: ASYNC220 - it prints one line at once
        [
            sys.executable,
            "-c",
            f"import socket, time\ns = socket.create_server(('127.0.0.1', {port}))\nprint('ready', flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert orphan.stdout is not None
        assert orphan.stdout.readline() == b"ready\n"
        wrapper = write_wrapper(tmp_path)
        config = wstunnel_config(tmp_path, backend_lines(f'host = "127.0.0.1"\n  port = {port}', wrapper))
        with trio.fail_after(60):
            result = await trio.run_process(
                [sys.executable, "-m", "wstrio", "serve", str(config)],
                capture_stderr=True,
                check=False,
                cwd=str(tmp_path),
            )
        stderr = result.stderr.decode()
        assert result.returncode == 1, stderr
        assert f"127.0.0.1:{port} is already in use by pid {orphan.pid} (python" in stderr, stderr
        assert "does not adopt" in stderr
        assert "Traceback" not in stderr
        assert orphan.poll() is None, "a program wstrio did not start is left alone"
    finally:
        orphan.kill()
        orphan.wait()
        assert orphan.stdout is not None
        orphan.stdout.close()
