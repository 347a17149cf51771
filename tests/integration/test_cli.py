"""The ``wstrio`` command as a user runs it: separate processes, real signals."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from websockets.exceptions import ConnectionClosed

from tests.helpers import (
    EXAMPLES,
    PROCESS_TIMEOUT,
    CliServer,
    RawClients,
    pid_alive,
    prepare_examples,
    start_cli_server,
    toml_string,
    wait_pid_gone,
    write_python_backend,
    ws_client,
    ws_connect,
)
from wstrio import __version__


async def run_wstrio(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process(
            [sys.executable, "-m", "wstrio", *args], capture_stdout=True, capture_stderr=True, check=False, cwd=cwd
        )


async def test_version() -> None:
    result = await run_wstrio("--version")
    assert result.returncode == 0
    line = result.stdout.decode().strip()
    assert line.startswith(f"wstrio {__version__} (Python {sys.version_info[0]}.{sys.version_info[1]}.")
    assert line.endswith(("; C accelerator: on)", "; C accelerator: off (pure Python))"))


async def test_version_says_whether_the_accelerator_is_on() -> None:
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "wstrio", "--version"],
            capture_stdout=True,
            env={**os.environ, "WSTRIO_NO_SPEEDUPS": "1"},
        )
    assert result.stdout.decode().strip().endswith("; C accelerator: off (pure Python))")


async def test_no_command_is_usage_error() -> None:
    result = await run_wstrio()
    assert result.returncode == 2
    assert b"usage:" in result.stderr


async def test_check_good_config(tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    config = tmp_path / "good.toml"
    config.write_text(
        '[server]\nlisten = ["127.0.0.1:0"]\ndocument-root = "www"\n\n'
        '[[route]]\npath = "/ws/"\nhandler = "wstunnel"\n  [[route.backend]]\n  host = "127.0.0.1"\n  port = 9\n'
    )
    result = await run_wstrio("check", str(config))
    assert result.returncode == 0, result.stderr
    assert b"OK" in result.stdout
    assert str(config).encode() in result.stdout


NOVNC_INSTALLED = Path("/usr/share/novnc").is_dir()
SYSTEMD_LOGS_DIR = Path("/var/log/wstrio").is_dir()


@pytest.mark.parametrize("name", sorted(str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*.toml")))
async def test_check_every_example(tmp_path: Path, name: str) -> None:
    config = prepare_examples(tmp_path) / name
    result = await run_wstrio("check", str(config))
    if name == "novnc.toml" and not NOVNC_INSTALLED:
        # Its document root is Debian's novnc package: without it, check says so.
        assert result.returncode == 1
        assert b"server.document-root: '/usr/share/novnc' does not exist" in result.stderr
        return
    if name == "systemd/wstrio.toml" and not SYSTEMD_LOGS_DIR:
        # Its access log is in the directory systemd's LogsDirectory= creates: without it, check says so.
        assert result.returncode == 1
        assert b"server.access-log: the directory '/var/log/wstrio' for the access log does not exist" in result.stderr
        return
    assert result.returncode == 0, result.stderr.decode()
    assert b"OK" in result.stdout


async def test_check_broken_config_lists_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text(
        "[server]\n"
        'listen = ["nowhere"]\n'
        'max-connections = "lots"\n'
        "bogus = 1\n"
        "\n"
        "[[route]]\n"
        'path = "/ws/"\n'
        'handler = "teleport"\n'
        "  [[route.backend]]\n"
        '  host = "127.0.0.1"\n'
        "  port = 99999\n"
    )
    result = await run_wstrio("check", str(config))
    assert result.returncode == 1
    err = result.stderr.decode()
    assert str(config) in err
    for key in (
        "server.listen",
        "server.max-connections",
        "server.bogus",
        "route[0].handler",
        "route[0].backend[0].port",
    ):
        assert key in err, f"{key} missing from:\n{err}"
    assert "5 problems" in err
    assert result.stdout == b""


async def test_check_unparsable_toml(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[server\nlisten = \n")
    result = await run_wstrio("check", str(config))
    assert result.returncode == 1
    assert str(config).encode() in result.stderr
    assert b"TOML" in result.stderr


async def test_check_missing_file(tmp_path: Path) -> None:
    result = await run_wstrio("check", str(tmp_path / "absent.toml"))
    assert result.returncode == 1
    assert b"absent.toml" in result.stderr


async def test_serve_invalid_config_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text('[server]\nlisten = ["127.0.0.1:0"]\nmax-connections = -1\n')
    result = await run_wstrio("serve", str(config))
    assert result.returncode == 1
    assert b"server.max-connections" in result.stderr


async def test_serve_unbindable_address_exits_1(tmp_path: Path) -> None:
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = tmp_path / "busy.toml"
        config.write_text(f'[server]\nlisten = ["127.0.0.1:{port}"]\n')
        result = await run_wstrio("serve", str(config))
    assert result.returncode == 1
    assert f"127.0.0.1:{port}".encode() in result.stderr


def spawned_config(tmp_path: Path) -> Path:
    """A config on port 0 whose route spawns the pid-echo backend."""
    backend = write_python_backend(tmp_path / "backend.py")
    www = tmp_path / "www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text("<p>hi</p>\n")
    config = tmp_path / "wstrio.toml"
    config.write_text(
        "[server]\n"
        'listen = ["127.0.0.1:0"]\n'
        'document-root = "www"\n'
        "shutdown-timeout = 5\n"
        "\n"
        "[[route]]\n"
        'path = "/ws/"\n'
        'handler = "wstunnel"\n'
        "  [[route.backend]]\n"
        f"  socket = {toml_string(tmp_path / 'b.sock')}\n"
        f"  bin-path = {toml_string(backend)}\n"
        "  max-procs = 1\n"
    )
    return config


async def tunnel_pid(cli: CliServer) -> int:
    def ask(url: str) -> int:
        with ws_connect(url) as ws:
            ws.send("pid\n")
            text = ""
            while not text.endswith("\n"):
                text += str(ws.recv(timeout=10))
            return int(text)

    return await ws_client(ask, f"ws://127.0.0.1:{cli.port}/ws/")


async def test_serve_then_sigterm_exits_0_and_stops_the_backend(nursery: trio.Nursery, tmp_path: Path) -> None:
    cli = await start_cli_server(nursery, spawned_config(tmp_path))
    pid = await tunnel_pid(cli)
    assert pid_alive(pid)

    def hold_tunnel_and_wait_for_close(url: str) -> int | None:
        with ws_connect(url) as ws:
            ws.send("x\n")
            ws.recv(timeout=10)
            cli.process.send_signal(signal.SIGTERM)
            try:
                ws.recv(timeout=20)
            except ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd else None
            return -1

    code = await ws_client(hold_tunnel_and_wait_for_close, f"ws://127.0.0.1:{cli.port}/ws/")
    assert code == 1001
    assert await cli.stop(None) == 0
    await wait_pid_gone(pid)
    log = "\n".join(cli.stderr)
    assert "SIGTERM" in log
    assert "closed 1001 by shutdown" in log, "the tunnel's access-log line lacks its outcome"
    assert not (tmp_path / "b.sock-0").exists(), "the backend socket file was left behind"


async def test_a_second_sigterm_ends_the_graceful_shutdown_at_once(
    nursery: trio.Nursery, raw: RawClients, tmp_path: Path
) -> None:
    config = spawned_config(tmp_path)
    config.write_text(config.read_text().replace("shutdown-timeout = 5", "shutdown-timeout = 600"))
    cli = await start_cli_server(nursery, config)
    pid = await tunnel_pid(cli)
    # A client that never answers the CLOSE: the graceful shutdown would wait 600 s for it.
    client = await raw.tcp(cli.port)
    assert (await client.ws_handshake()).status == 101
    cli.process.send_signal(signal.SIGTERM)
    frame = await client.read_frame()
    assert frame.opcode == 0x8
    assert int.from_bytes(frame.payload[:2], "big") == 1001
    # (The line was written before the CLOSE, but this process may read the pipe after the frame.)
    with trio.fail_after(PROCESS_TIMEOUT):
        while not any("send it again to exit at once" in line for line in cli.stderr):  # noqa: ASYNC110
            await trio.sleep(0.01)
    cli.process.send_signal(signal.SIGTERM)
    assert await cli.stop(None) == 0  # within PROCESS_TIMEOUT, long before 600 s
    assert any("SIGTERM again" in line for line in cli.stderr)
    await wait_pid_gone(pid)
    assert not (tmp_path / "b.sock-0").exists(), "the backend socket file was left behind"


async def test_serve_sigint_exits_0(nursery: trio.Nursery, tmp_path: Path) -> None:
    cli = await start_cli_server(nursery, spawned_config(tmp_path))
    pid = await tunnel_pid(cli)
    assert await cli.stop(signal.SIGINT) == 0
    await wait_pid_gone(pid)


async def test_serve_logs_where_it_listens_and_serves_static_files(nursery: trio.Nursery, tmp_path: Path) -> None:
    cli = await start_cli_server(nursery, spawned_config(tmp_path))
    stream = await trio.open_tcp_stream("127.0.0.1", cli.port)
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b"<p>hi</p>\n")
    assert any(f"listening on http://127.0.0.1:{cli.port}" in line for line in cli.stderr)
    assert await cli.stop() == 0


# --------------------------------------------------------------------------
# The open-file limit
# --------------------------------------------------------------------------


def _soft_nofile(soft: int) -> Callable[[], None]:
    def preexec() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard), hard))

    return preexec


def _limits_of(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no 'Max open files' line")


def _small_config(tmp_path: Path, max_connections: int) -> Path:
    config = tmp_path / "small.toml"
    config.write_text(
        f'[server]\nlisten = ["127.0.0.1:0"]\nmax-connections = {max_connections}\nhttp2 = false\n\n'
        '[[route]]\npath = "/ws/"\nhandler = "wstunnel"\n  [[route.backend]]\n  host = "127.0.0.1"\n  port = 9\n'
    )
    return config


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="needs /proc (Linux)")
async def test_serve_raises_the_soft_open_file_limit_to_the_hard_one(nursery: trio.Nursery, tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 512:
        pytest.skip("the hard open-file limit is too low to see a raise")
    cli = await start_cli_server(nursery, _small_config(tmp_path, 10), preexec_fn=_soft_nofile(256))
    assert _limits_of(cli.process.pid) == (hard, hard)
    assert not any("open-file limit" in line for line in cli.stderr)
    assert await cli.stop() == 0


async def test_check_warns_when_the_hard_open_file_limit_is_too_low(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    config = _small_config(tmp_path, hard)  # clients alone need every descriptor
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "wstrio", "check", str(config)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 0, result.stderr  # a warning, not a problem
    err = result.stderr.decode()
    assert f"{config}: warning: the open-file limit is {hard} (hard {hard})" in err
    assert f"may need {2 * hard + 1 + 64} file descriptors" in err
    assert "LimitNOFILE" in err


async def test_check_is_quiet_when_the_limit_is_enough(tmp_path: Path) -> None:
    result = await run_wstrio("check", str(_small_config(tmp_path, 10)))
    assert result.returncode == 0
    assert b"warning" not in result.stderr


# --------------------------------------------------------------------------
# A configuration on standard input
# --------------------------------------------------------------------------

STDIN_CONFIG = (
    '[server]\nlisten = ["127.0.0.1:0"]\ndocument-root = "www"\nworkers = {workers}\n\n'
    '[[route]]\npath = "/ws/"\nhandler = "wstunnel"\n  [[route.backend]]\n  host = "127.0.0.1"\n  port = 9\n'
)


def _pipe_with(text: str) -> int:
    """The read end of a pipe holding ``text`` (the caller closes it)."""
    read, write = os.pipe()
    os.write(write, text.encode())
    os.close(write)
    return read


async def test_check_reads_standard_input_once(tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "wstrio", "check", "-"],
            stdin=STDIN_CONFIG.format(workers=1).replace("127.0.0.1:0", "127.0.0.1:8123").encode(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().startswith("<stdin>: OK (1 route; listens on 127.0.0.1:8123)")


@pytest.mark.parametrize("name", ["-", "/dev/stdin"])
@pytest.mark.parametrize("workers", [1, 2])
async def test_serve_reads_the_config_from_a_pipe(
    nursery: trio.Nursery, tmp_path: Path, name: str, workers: int
) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("<p>from stdin</p>\n")
    read = _pipe_with(STDIN_CONFIG.format(workers=workers))
    try:
        cli = await start_cli_server(nursery, Path(name), stdin=read, cwd=str(tmp_path))
    finally:
        os.close(read)
    stream = await trio.open_tcp_stream("127.0.0.1", cli.port)
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                data += chunk
    # The routes and document root of the piped file, relative to the current directory.
    assert data.startswith(b"HTTP/1.1 200 "), data
    assert data.endswith(b"<p>from stdin</p>\n")
    assert await cli.stop() == 0


async def test_a_bad_config_on_stdin_is_named_stdin(tmp_path: Path) -> None:
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "wstrio", "serve", "-"],
            stdin=b"[server]\nlisten = 5\n",
            capture_stderr=True,
            check=False,
            cwd=tmp_path,
        )
    assert result.returncode == 1
    assert b"<stdin>: server.listen" in result.stderr


# --------------------------------------------------------------------------
# Files the configuration names
# --------------------------------------------------------------------------


def _spawned_route(bin_path: str, socket: str) -> str:
    return (
        f'[[route]]\npath = "/ws/"\nhandler = "wstunnel"\n  [[route.backend]]\n'
        f"  bin-path = {toml_string(bin_path)}\n  socket = {toml_string(socket)}\n  max-procs = 1\n"
    )


@pytest.mark.parametrize(
    ("setup", "key", "message"),
    [
        pytest.param("missing-root", "server.document-root", "does not exist", id="missing-document-root"),
        pytest.param("root-is-file", "server.document-root", "is not a directory", id="document-root-is-a-file"),
        pytest.param("missing-program", "route[0].backend[0].bin-path", "does not exist", id="missing-bin-path"),
        pytest.param("not-executable", "route[0].backend[0].bin-path", "is not executable", id="bin-path-not-x"),
        pytest.param("socket-dir", "route[0].backend[0].socket", "does not exist", id="spawned-socket-directory"),
    ],
)
async def test_check_finds_what_the_files_would_break(tmp_path: Path, setup: str, key: str, message: str) -> None:
    program = tmp_path / "backend.sh"
    program.write_text("#!/bin/sh\nexec cat\n")
    program.chmod(0o755)
    root, socket = tmp_path / "www", tmp_path / "b.sock"
    root.mkdir()
    if setup == "missing-root":
        root.rmdir()
    elif setup == "root-is-file":
        root.rmdir()
        root.write_text("not a directory")
    elif setup == "missing-program":
        program.unlink()
    elif setup == "not-executable":
        program.chmod(0o644)
    elif setup == "socket-dir":
        socket = tmp_path / "missing" / "b.sock"
    config = tmp_path / "c.toml"
    config.write_text(
        f'[server]\nlisten = ["127.0.0.1:0"]\ndocument-root = "www"\n\n{_spawned_route(str(program), str(socket))}'
    )
    result = await run_wstrio("check", str(config))
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert f"{config}: 1 problem:" in err
    assert f"  {key}: " in err
    assert message in err


async def test_check_warns_about_a_backend_socket_not_there_yet(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[server]\nlisten = ["127.0.0.1:0"]\n\n[[route]]\npath = "/ws/"\nhandler = "wstunnel"\n'
        '  [[route.backend]]\n  socket = "/run/not-there-yet/app.sock"\n'
    )
    result = await run_wstrio("check", str(config))
    assert result.returncode == 0, result.stderr
    assert b"warning: route[0].backend[0].socket: the directory '/run/not-there-yet' does not exist" in result.stderr
    assert b"OK" in result.stdout


async def test_serve_logs_a_document_root_that_cannot_serve(nursery: trio.Nursery, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[server]\nlisten = ["127.0.0.1:0"]\ndocument-root = "no-such-dir"\n')
    cli = await start_cli_server(nursery, config)
    assert any(
        "ERROR" in line and "server.document-root" in line and "does not exist" in line for line in cli.stderr
    ), cli.stderr
    assert await cli.stop() == 0


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.mark.skipif(os.getuid() != 0 or shutil.which("setpriv") is None, reason="runs as nobody: needs root, setpriv")
async def test_a_privileged_port_gets_a_hint() -> None:
    with trio.fail_after(60):
        result = await trio.run_process(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                sys.executable,
                "-m",
                "wstrio",
                "serve",
                "-",
            ],
            stdin=b'[server]\nlisten = ["127.0.0.1:80"]\n',  # on stdin: nobody cannot read the test's files
            capture_stderr=True,
            check=False,
            cwd="/",
        )
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert "cannot listen on 127.0.0.1:80: Permission denied" in err
    assert "CAP_NET_BIND_SERVICE" in err
