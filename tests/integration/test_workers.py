"""workers = N: one supervisor, N worker processes on shared listening sockets."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.helpers import PID_TAGGING_BACKEND, pid_alive, write_python_backend

pytestmark = pytest.mark.slow


def wait_for(pattern: str, log: Path, deadline: float = 20.0) -> re.Match[str]:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        found = re.search(pattern, log.read_text())
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not in the log:\n{log.read_text()}")


def test_two_workers_share_the_port_and_the_backend(tmp_path: Path) -> None:
    program = write_python_backend(tmp_path / "pid_echo.py", PID_TAGGING_BACKEND)
    config = tmp_path / "wstrio.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            [server]
            listen = ["127.0.0.1:0"]
            workers = 2
            shutdown-timeout = 5

            [[route]]
            path = "/ws/"
            handler = "wstunnel"

              [[route.backend]]
              socket = "{tmp_path / "echo.sock"}"
              bin-path = "{program}"
              min-procs = 1
              max-procs = 2
            """
        )
    )
    log = tmp_path / "wstrio.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "wstrio", "serve", str(config)], stderr=out, stdout=out)
    try:
        port = int(wait_for(r"2 workers listening on \('127\.0\.0\.1', (\d+)\)", log).group(1))
        wait_for(r"wstrio\.server\[0\] INFO listening", log)
        wait_for(r"wstrio\.server\[1\] INFO listening", log)
        workers = [int(pid) for pid in re.findall(r"started worker \d \(pid (\d+)\)", log.read_text())]
        assert len(workers) == 2
        # With workers, pools are fixed-size: both backend processes run, started once.
        assert (tmp_path / "echo.sock-0").exists()
        assert (tmp_path / "echo.sock-1").exists()
        backend_pids = set()
        for i in range(20):
            with connect(f"ws://127.0.0.1:{port}/ws/") as ws:
                ws.send(f"m{i}")
                reply = str(ws.recv(timeout=10))
                assert reply.endswith(f":m{i}")
                backend_pids.add(int(reply.split(":")[0]))
        served_by = set(re.findall(r"wstrio\.access\[(\d)\]", log.read_text()))
        assert served_by == {"0", "1"}, "the kernel should give connections to both workers"
        # A worker that dies is replaced, and the port keeps working.
        os.kill(workers[0], signal.SIGKILL)
        wait_for(rf"worker \d \(pid {workers[0]}\) exited", log)
        with connect(f"ws://127.0.0.1:{port}/ws/") as ws:
            ws.send("after")
            assert str(ws.recv(timeout=10)).endswith(":after")
        # SIGTERM drains every worker and stops the backends.
        with connect(f"ws://127.0.0.1:{port}/ws/") as ws:
            ws.send("open")
            ws.recv(timeout=10)
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=15)
            assert ws.close_code == 1001
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for pid in backend_pids | set(workers[1:]):
        end = time.monotonic() + 5
        while pid_alive(pid) and time.monotonic() < end:
            time.sleep(0.05)
        assert not pid_alive(pid), f"process {pid} outlived wstrio"
