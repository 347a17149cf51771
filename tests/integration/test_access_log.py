"""The access log as JSON lines and in a file reopened for logrotate (issue 15, item 2).

Real servers, the ``websockets`` library as the client, and for the CLI the
real ``python -m wstrio serve`` with signals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import wstrio
from tests.h2client import run_h2_client
from tests.helpers import (
    RawClient,
    RawClients,
    serve_echo_unix,
    start_cli_server,
    start_server,
    toml_string,
    ws_client,
    ws_connect,
)
from wstrio._sansio.accesslog import KEYS


def _config(tmp_path: Path, backend: Path, **server: Any) -> dict[str, Any]:
    route = {"path": "/ws/", "handler": "wstunnel", "backend": [{"socket": str(backend)}]}
    return {"server": {"http2": True, **server}, "route": [route]}


def _echo_three(url: str) -> list[str]:
    with ws_connect(url) as ws:
        got = []
        for text in ("one", "two", "three"):
            ws.send(text)
            got.append(str(ws.recv(timeout=10)))
    return got


async def _lines(path: Path, count: int) -> list[str]:
    """The file's lines, once it has at least ``count`` (an access line is written when its request ends)."""
    file = trio.Path(path)
    with trio.fail_after(30):
        while True:
            lines = (await file.read_text()).splitlines() if await file.exists() else []
            if len(lines) >= count:
                return lines
            await trio.sleep(0.02)


async def test_json_lines_say_what_each_request_and_tunnel_did(
    nursery: trio.Nursery, tmp_path: Path, raw: RawClients
) -> None:
    backend = await serve_echo_unix(nursery, tmp_path / "echo.sock")
    log_file = tmp_path / "access.jsonl"
    config = _config(tmp_path, backend, **{"access-log": str(log_file), "access-log-format": "json"})
    server = await start_server(nursery, config)
    assert await ws_client(_echo_three, server.url("/ws/", scheme="ws")) == ["one", "two", "three"]
    client = await raw.tcp(server.port)
    assert (await client.request(b"GET /nothing?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")).status == 404
    async with run_h2_client(await trio.open_tcp_stream("127.0.0.1", server.port)) as h2:
        status, _stream, _body = await h2.get("/h2-nothing")
    assert status == 404
    tunnel, plain, over_h2 = (json.loads(line) for line in await _lines(log_file, 3))

    assert list(tunnel)[: len(KEYS)] == list(KEYS), "the fixed keys come first, in order"
    assert tunnel["method"] == "GET"
    assert tunnel["path"] == "/ws/"
    assert tunnel["protocol"] == "HTTP/1.1"
    assert tunnel["status"] == 101
    assert tunnel["client"] == "127.0.0.1"
    assert isinstance(tunnel["client_port"], int)
    assert tunnel["route"] == "/ws/"
    assert tunnel["backend"] == f"unix:{backend}"
    assert tunnel["close_code"] == 1000
    assert tunnel["closed_by"] == "client"
    assert tunnel["messages_from_client"] == 3
    assert tunnel["messages_to_client"] == 3
    assert tunnel["bytes_from_client"] == len("onetwothree")
    assert tunnel["bytes_to_client"] >= len("onetwothree") + 3 * 2  # frame headers, and the CLOSE
    assert tunnel["duration"] >= 0
    assert tunnel["time"].endswith("Z")

    assert plain["path"] == "/nothing?x=1"
    assert plain["status"] == 404
    assert plain["route"] is None
    assert plain["backend"] is None
    assert "close_code" not in plain

    assert over_h2["protocol"] == "HTTP/2"
    assert over_h2["path"] == "/h2-nothing"
    assert over_h2["status"] == 404


async def test_text_lines_in_a_file_carry_their_time(nursery: trio.Nursery, tmp_path: Path, raw: RawClients) -> None:
    backend = await serve_echo_unix(nursery, tmp_path / "echo.sock")
    log_file = tmp_path / "access.log"
    server = await start_server(nursery, _config(tmp_path, backend, **{"access-log": str(log_file)}))
    client = await raw.tcp(server.port)
    assert (await client.request(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")).status == 404
    (line,) = await _lines(log_file, 1)
    date, clock, rest = line.split(" ", 2)
    assert len(date) == 10, line
    assert date[4] == "-", line
    assert ":" in clock, line
    peer, request, status, sent, duration = rest.split(" ", 1)[0], *rest.split('"')[1:2], *rest.split()[-3:]
    assert peer.startswith("127.0.0.1:"), line
    assert request == "GET /x HTTP/1.1", line
    assert status == "404", line
    assert sent.isdigit(), line
    assert duration.endswith("s"), line


async def test_reopen_follows_logrotate(nursery: trio.Nursery, tmp_path: Path, raw: RawClients) -> None:
    backend = await serve_echo_unix(nursery, tmp_path / "echo.sock")
    log_file = tmp_path / "access.log"
    server = await start_server(nursery, _config(tmp_path, backend, **{"access-log": str(log_file)}))
    client = await raw.tcp(server.port)
    await client.request(b"GET /before HTTP/1.1\r\nHost: a\r\n\r\n")
    await _lines(log_file, 1)
    log_file.rename(tmp_path / "access.log.1")  # what logrotate does
    assert server.reopen_access_log()
    await client.request(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
    (after,) = await _lines(log_file, 1)
    assert "/after" in after
    rotated = (tmp_path / "access.log.1").read_text()
    assert "/before" in rotated
    assert "/after" not in rotated


async def test_an_access_log_that_cannot_be_opened_names_the_key(nursery: trio.Nursery, tmp_path: Path) -> None:
    backend = await serve_echo_unix(nursery, tmp_path / "echo.sock")
    config = _config(tmp_path, backend, **{"access-log": str(tmp_path / "no-such-dir" / "access.log")})
    with pytest.raises(wstrio.ConfigError, match=r"server\.access-log: cannot open .*No such file"):
        await start_server(nursery, config)


async def _wait_for_line(cli: Any, text: str) -> str:
    """The first stderr line of ``cli`` that contains ``text`` (read as the process writes them)."""
    with trio.fail_after(30):
        while True:
            for line in cli.stderr:
                if text in line:
                    return str(line)
            await trio.sleep(0.02)


async def test_cli_json_lines_on_stderr_are_bare_and_sigusr1_reopens(nursery: trio.Nursery, tmp_path: Path) -> None:
    backend = await serve_echo_unix(nursery, tmp_path / "echo.sock")
    route = f'[[route]]\npath = "/ws/"\nhandler = "wstunnel"\n  [[route.backend]]\n  socket = {toml_string(backend)}\n'
    # JSON on stderr: each access line is one object, with nothing in front.
    config = tmp_path / "stderr.toml"
    config.write_text(f'[server]\nlisten = ["127.0.0.1:0"]\naccess-log-format = "json"\n\n{route}')
    cli = await start_cli_server(nursery, config)
    client = await RawClient.tcp(cli.port)
    await client.request(b"GET /cli HTTP/1.1\r\nHost: a\r\n\r\n")
    line = await _wait_for_line(cli, '"/cli"')
    assert json.loads(line)["status"] == 404
    await client.aclose()
    assert await cli.stop() == 0
    # A file, rotated, and SIGUSR1.
    log_file = tmp_path / "access.log"
    config = tmp_path / "file.toml"
    config.write_text(f'[server]\nlisten = ["127.0.0.1:0"]\naccess-log = "access.log"\n\n{route}')
    cli = await start_cli_server(nursery, config)
    client = await RawClient.tcp(cli.port)
    await client.request(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
    await _lines(log_file, 1)
    log_file.rename(tmp_path / "access.log.1")
    os.kill(cli.process.pid, signal.SIGUSR1)
    await _wait_for_line(cli, "reopened the access log")
    await client.request(b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n")
    (two,) = await _lines(log_file, 1)
    assert "/two" in two
    assert "/two" not in (tmp_path / "access.log.1").read_text()
    assert not any('"GET /' in line for line in cli.stderr), "with a file, access lines do not go to stderr"
    await client.aclose()
    assert await cli.stop() == 0


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('access-log-format = "xml"', "server.access-log-format: "),
        ('access-log = "missing-dir/access.log"', "server.access-log: the directory "),
    ],
)
def test_check_finds_access_log_settings_that_cannot_work(tmp_path: Path, line: str, expected: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f"[server]\n{line}\n")
    result = subprocess.run(
        [sys.executable, "-m", "wstrio", "check", str(config)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert expected in result.stderr, result.stderr
