"""systemd: the notify protocol and socket activation (issue 15, item 5).

The real ``python -m wstrio serve``, a real datagram socket as systemd's
``NOTIFY_SOCKET``, and listening sockets passed as fd 3 with ``LISTEN_PID``
set to the server's own pid, as systemd does (a ``sh`` that ``exec``\\ s
wstrio keeps its pid).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import pytest
import trio

from tests.helpers import RawClients, start_cli_server, start_server, toml_string
from wstrio._io.systemd import inherited_sockets

CGI_ENV = """\
import os
body = repr(os.environ.get("NOTIFY_SOCKET")).encode()
print("Content-Type: text/plain")
print("Content-Length: %d" % len(body))
print()
os.sys.stdout.flush()
os.write(1, body)
"""


def activated(names: str = "web") -> list[str]:
    """A wrapper that passes its stdin as fd 3, systemd's way, then becomes wstrio."""
    script = f'exec 3<&0 0</dev/null; export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES={names}; exec "$@"'
    return ["sh", "-c", script, "sh"]


async def _next(sock: trio.socket.SocketType) -> str:
    with trio.fail_after(30):
        data = await sock.recv(4096)
    return data.decode()


async def test_ready_reloading_and_stopping_reach_the_notify_socket(
    nursery: trio.Nursery, tmp_path: Path, raw: RawClients
) -> None:
    notify = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await notify.bind(str(tmp_path / "notify.sock"))
    www = tmp_path / "www"
    (www / "cgi").mkdir(parents=True)
    (www / "cgi" / "env.py").write_text(CGI_ENV)
    config = tmp_path / "wstrio.toml"
    config.write_text(
        f'[server]\nlisten = ["127.0.0.1:0"]\ndocument-root = {toml_string(www)}\n\n'
        f'[[route]]\npath = "/cgi/"\nhandler = "cgi"\nassign = {{ ".py" = {toml_string(sys.executable)} }}\n'
    )
    cli = await start_cli_server(nursery, config, env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    ready = await _next(notify)
    assert ready.splitlines()[0] == "READY=1"
    assert f"STATUS=listening on 127.0.0.1:{cli.port}" in ready
    assert (await _next(notify)).startswith("STATUS=0 connections")
    # Programs wstrio starts do not inherit the notify socket.
    client = await raw.tcp(cli.port)
    response = await client.request(b"GET /cgi/env.py HTTP/1.1\r\nHost: a\r\n\r\n")
    assert response.status == 200
    assert response.body == b"None"
    cli.process.send_signal(signal.SIGHUP)
    reloading = await _next(notify)
    assert reloading.startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert int(reloading.split("MONOTONIC_USEC=")[1]) > 0
    assert await _next(notify) == "READY=1"
    await client.aclose()
    cli.process.send_signal(signal.SIGTERM)
    while (message := await _next(notify)).startswith("STATUS="):
        pass
    assert message == "STOPPING=1"
    assert await cli.stop(None) == 0
    notify.close()


async def test_a_socket_passed_by_systemd_is_served_by_name(
    nursery: trio.Nursery, tmp_path: Path, raw: RawClients
) -> None:
    passed = socket.create_server(("127.0.0.1", 0))
    port = passed.getsockname()[1]
    config = tmp_path / "wstrio.toml"
    config.write_text('[server]\nlisten = ["systemd:web"]\n')
    try:
        cli = await start_cli_server(nursery, config, wrapper=activated(), stdin=passed.fileno())
    finally:
        passed.close()  # the server has its own copy
    assert cli.port == port
    client = await raw.tcp(port)
    assert (await client.request(b"GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n")).status == 404
    await client.aclose()
    assert await cli.stop() == 0


async def test_a_unix_socket_passed_by_systemd_is_left_in_place(nursery: trio.Nursery, tmp_path: Path) -> None:
    path = tmp_path / "web.sock"
    passed = socket.socket(socket.AF_UNIX)
    passed.bind(str(path))
    passed.listen()
    config = tmp_path / "wstrio.toml"
    config.write_text('[server]\nlisten = ["systemd", "127.0.0.1:0"]\n')
    try:
        cli = await start_cli_server(nursery, config, wrapper=activated("web.socket"), stdin=passed.fileno())
    finally:
        passed.close()
    with trio.fail_after(30):
        stream = await trio.open_unix_socket(str(path))
    await stream.send_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    with trio.fail_after(30):
        assert (await stream.receive_some(100)).startswith(b"HTTP/1.1 404")
    await stream.aclose()
    assert await cli.stop() == 0
    assert path.exists(), "systemd owns the socket file: wstrio must not remove it"


async def test_no_socket_of_that_name_is_a_clear_error(tmp_path: Path) -> None:
    passed = socket.create_server(("127.0.0.1", 0))
    config = tmp_path / "wstrio.toml"
    config.write_text('[server]\nlisten = ["systemd:admin"]\n')
    try:
        with trio.fail_after(60):
            result = await trio.run_process(
                [*activated(), sys.executable, "-m", "wstrio", "serve", str(config)],
                stdin=passed.fileno(),
                capture_stderr=True,
                check=False,
            )
    finally:
        passed.close()
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "systemd passed no socket named 'admin' (FileDescriptorName=; passed: web)" in stderr
    assert "Traceback" not in stderr


def test_listen_pid_of_another_process_is_not_ours() -> None:
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "web"}
    assert inherited_sockets(env) == []
    assert env == {}, "the variables are removed all the same"


@pytest.mark.parametrize(("text", "name"), [("systemd", None), ("systemd:web", "web")])
def test_listen_strings(text: str, name: str | None) -> None:
    from wstrio._sansio.config.values import listen_string

    address = listen_string(text, Path("/"))
    assert address.kind == "systemd"
    assert address.name == name
    assert str(address) == text


async def test_an_embedded_server_leaves_listen_fds_alone(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The application embedding wstrio may use socket activation itself: a
    # server that listens on no "systemd" address must not take the variables.
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "1")
    await start_server(nursery, {"server": {"listen": ["127.0.0.1:0"]}})
    assert os.environ["LISTEN_FDS"] == "1"
    assert os.environ["LISTEN_PID"] == str(os.getpid())
