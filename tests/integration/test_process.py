"""``handler = "process"`` (one program per WebSocket) and ``framing``, with real programs and real clients."""

from __future__ import annotations

import json
import signal
import socket
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import wstrio
from tests.h2client import open_h2_client
from tests.helpers import (
    OP_TEXT,
    PROCESS_TIMEOUT,
    RawClient,
    RawClients,
    client_close_frame,
    client_frame,
    pid_alive,
    serve_tcp_backend,
    start_cli,
    start_server,
    wait_pid_gone,
    ws_client,
)

ENV_PROGRAM = """\
import json, os, sys
keys = ["REMOTE_ADDR", "REMOTE_PORT", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "SERVER_SOFTWARE",
        "REQUEST_METHOD", "PATH_INFO", "SCRIPT_NAME", "QUERY_STRING", "REQUEST_URI", "HTTP_X_TEST", "HTTP_PROXY",
        "PYTHONUNBUFFERED", "EXTRA", "COPIED", "PATH"]
print(json.dumps({k: os.environ.get(k) for k in keys}))
for line in sys.stdin:
    print("echo:" + line.rstrip("\\n"))
"""


def program(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / name
    path.write_text(source)
    return path


def process_route(command: list[str], path: str = "/p/", **extra: Any) -> dict[str, Any]:
    return {"path": path, "handler": "process", "command": command, **extra}


def until_closed(url: str, send: tuple[str, ...] = ()) -> tuple[list[str | bytes], int | None, str | None]:
    """Connect, send ``send``, and read every message until the server closes: (messages, code, reason)."""
    got: list[str | bytes] = []
    with connect(url) as ws:
        for text in send:
            ws.send(text)
        try:
            while True:
                got.append(ws.recv(timeout=10))
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
    return got, rcvd.code if rcvd else None, rcvd.reason if rcvd else None


def framed_route(port: int, **keys: Any) -> dict[str, Any]:
    """A wstunnel route ``/t/`` to 127.0.0.1:``port`` with ``keys`` (the framing)."""
    return {"path": "/t/", "handler": "wstunnel", "backend": [{"host": "127.0.0.1", "port": port}], **keys}


async def start(nursery: trio.Nursery, *routes: dict[str, Any], **server: Any) -> wstrio.Server:
    return await start_server(nursery, {"server": {"shutdown-timeout": 0.5, **server}, "route": list(routes)})


async def test_lines_both_ways_and_the_websocketd_environment(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COPIED", "from wstrio")
    script = program(tmp_path, "env.py", ENV_PROGRAM)
    route = process_route(
        [sys.executable, str(script)],
        **{"bin-environment": {"EXTRA": "yes"}, "bin-copy-environment": ["COPIED"]},
    )
    server = await start(nursery, route)

    def client() -> tuple[dict[str, Any], list[str], int | None]:
        url = server.url("/p/more/path?x=1&y=2", scheme="ws")
        with connect(url, additional_headers={"X-Test": "hi", "Proxy": "evil"}) as ws:
            env = json.loads(ws.recv(timeout=10))
            echoed = []
            for text in ("one", "two words", "ünïcode"):
                ws.send(text)
                echoed.append(ws.recv(timeout=10))
            port = ws.local_address[1]
        return env, echoed, port

    env, echoed, port = await ws_client(client)
    assert echoed == ["echo:one", "echo:two words", "echo:ünïcode"]
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(port)
    assert env["SERVER_PORT"] == str(server.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_SOFTWARE"].startswith("wstrio/")
    assert env["REQUEST_METHOD"] == "GET"
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/p", "/more/path")
    assert env["QUERY_STRING"] == "x=1&y=2"
    assert env["REQUEST_URI"] == "/p/more/path?x=1&y=2"
    assert env["HTTP_X_TEST"] == "hi"
    assert env["HTTP_PROXY"] is None  # httpoxy
    assert env["PYTHONUNBUFFERED"] == "1"
    assert (env["EXTRA"], env["COPIED"]) == ("yes", "from wstrio")
    assert env["PATH"]


@pytest.mark.parametrize(("status", "code"), [(0, 1000), (3, 1011)])
async def test_the_exit_status_is_the_close_code(nursery: trio.Nursery, status: int, code: int) -> None:
    server = await start(nursery, process_route(["sh", "-c", f"echo 1; echo 2; exit {status}"]))

    got, received, reason = await ws_client(until_closed, server.url("/p/", scheme="ws"))
    assert got == ["1", "2"]
    assert received == code
    if status:
        assert reason == "the program exited with status 3"


async def test_the_client_leaving_stops_the_program_and_its_group(
    nursery: trio.Nursery, raw: RawClients, tmp_path: Path
) -> None:
    # It ignores SIGTERM, and leaves a child behind: both get SIGKILL after kill-grace.
    pids = tmp_path / "pids"
    source = f"trap '' TERM; sleep 300 & echo $$ $! > {pids}; echo ready; wait"
    server = await start(nursery, process_route(["sh", "-c", source], **{"kill-grace": 0.2}))
    client = await raw.tcp(server.port)
    assert (await client.ws_handshake("/p/")).status == 101
    assert (await client.read_frame()).payload == b"ready"
    leader, child = map(int, pids.read_text().split())
    assert pid_alive(leader)
    assert pid_alive(child)
    await client.send(client_close_frame(1000))
    await client.aclose()
    await wait_pid_gone(leader)
    await wait_pid_gone(child)


async def test_max_processes_answers_503_before_the_101(nursery: trio.Nursery, raw: RawClients) -> None:
    server = await start(nursery, process_route(["cat"], **{"max-processes": 1}))
    first = await raw.tcp(server.port)
    assert (await first.ws_handshake("/p/")).status == 101
    second = await raw.tcp(server.port)
    response = await second.ws_handshake("/p/")
    assert response.status == 503
    assert response.header(b"retry-after") == b"5"
    await first.aclose()
    with trio.fail_after(PROCESS_TIMEOUT):
        while server.statistics().tunnels_active:  # noqa: ASYNC110 - a counter, not an event
            await trio.sleep(0.01)
    third = await raw.tcp(server.port)
    assert (await third.ws_handshake("/p/")).status == 101


@pytest.mark.parametrize("mode", ["client", "log", "discard"])
async def test_stderr_modes(nursery: trio.Nursery, mode: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="wstrio.process")
    command = ["sh", "-c", "echo to-stderr >&2; sleep 0.2; echo to-stdout"]
    server = await start(nursery, process_route(command, stderr=mode))

    got, _code, _reason = await ws_client(until_closed, server.url("/p/", scheme="ws"))
    logged = [r.getMessage() for r in caplog.records if r.name == "wstrio.process"]
    if mode == "client":
        assert got == ["to-stderr", "to-stdout"]
    else:
        assert got == ["to-stdout"]
    assert any(m.endswith(": to-stderr") for m in logged) == (mode == "log"), logged


async def test_pty_makes_the_output_a_terminal(nursery: trio.Nursery, tmp_path: Path) -> None:
    script = program(tmp_path, "tty.py", "import os, sys\nprint(os.isatty(1), os.isatty(0))\nprint(input())\n")
    routes = [
        process_route([sys.executable, str(script)], path="/pty/", pty=True),
        process_route([sys.executable, str(script)], path="/pipe/"),
    ]
    server = await start(nursery, *routes)

    def client(path: str) -> list[str | bytes]:
        with connect(server.url(path, scheme="ws")) as ws:
            first = ws.recv(timeout=10)
            ws.send("typed")
            return [first, ws.recv(timeout=10)]

    assert await ws_client(client, "/pty/") == ["True True", "typed"]  # no echo, no \r\n
    assert await ws_client(client, "/pipe/") == ["False False", "typed"]


async def test_a_program_that_cannot_start_is_500(nursery: trio.Nursery, raw: RawClients, tmp_path: Path) -> None:
    script = program(tmp_path, "noexec.sh", "#!/bin/sh\necho hi\n")  # not executable
    server = await start(nursery, process_route([str(script)]))
    client = await raw.tcp(server.port)
    assert (await client.ws_handshake("/p/")).status == 500


async def test_plain_requests_fall_through_to_the_static_files(
    nursery: trio.Nursery, raw: RawClients, tmp_path: Path
) -> None:
    (tmp_path / "index.html").write_text("the page\n")
    server = await start(nursery, process_route(["cat"], path="/"), **{"document-root": str(tmp_path)})
    client = await raw.tcp(server.port)
    response = await client.request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (response.status, response.body) == (200, b"the page\n")
    ws = await raw.tcp(server.port)
    assert (await ws.ws_handshake("/anything")).status == 101


async def test_a_process_route_over_http2(nursery: trio.Nursery) -> None:
    server = await start(nursery, process_route(["cat"]))
    async with open_h2_client("127.0.0.1", server.port) as client:
        ws = await client.websocket("/p/", scheme="http")
        await ws.send_text("over h2")
        assert await ws.receive_message() == "over h2"
        await ws.send_text("again\n")
        assert await ws.receive_message() == "again"
        close = await ws.close(1000)
        assert close.code == 1000


# --------------------------------------------------------------------------
# framing on wstunnel routes (a TCP backend)
# --------------------------------------------------------------------------


async def recording_backend(nursery: trio.Nursery, reply: bytes) -> tuple[int, list[bytes]]:
    """A backend that records what it reads and, on its first read, writes ``reply``."""
    seen: list[bytes] = []

    async def handler(stream: trio.SocketStream) -> None:
        first = True
        try:
            while data := await stream.receive_some(65536):
                seen.append(data)
                if first:
                    first = False
                    await stream.send_all(reply)
        except trio.BrokenResourceError:
            pass

    return await serve_tcp_backend(nursery, handler), seen


@pytest.mark.parametrize(
    ("framing", "sent", "reply", "expected"),
    [
        ({"framing": "lines"}, b"a\nbb\n", b"x\r\ny\nz", ["x", "y", "z"]),
        ({"framing": "nul"}, b"a\0bb\0", b"x\0y\0z", ["x", "y", "z"]),
        (
            {"framing": "length-prefixed", "length-bytes": 2},
            b"\0\1a\0\2bb",
            b"\0\1x\0\1y\0\1z",
            ["x", "y", "z"],
        ),
        ({"framing": "stream"}, b"abb", b"xyz", ["xyz"]),
    ],
)
async def test_framing_on_a_wstunnel_route(
    nursery: trio.Nursery, framing: dict[str, Any], sent: bytes, reply: bytes, expected: list[str]
) -> None:
    port, seen = await recording_backend(nursery, reply)
    route = framed_route(port, **framing)
    server = await start(nursery, route)

    def client() -> list[str | bytes]:
        with connect(server.url("/t/", scheme="ws")) as ws:
            ws.send("a")
            ws.send("bb")
            got: list[str | bytes] = []
            try:
                while len("".join(map(str, got))) < 3:
                    got.append(ws.recv(timeout=2 if framing["framing"] != "length-prefixed" else 10))
            except TimeoutError:
                pass
            return got

    got = await ws_client(client)
    if framing["framing"] == "lines" or framing["framing"] == "nul":
        # The last piece has no delimiter: it comes when the backend ends (here: never), so two.
        assert got == expected[:2]
    else:
        assert got == expected
    with trio.fail_after(PROCESS_TIMEOUT):
        while b"".join(seen) != sent:  # noqa: ASYNC110 - the backend's record
            await trio.sleep(0.01)


async def test_flush_timeout_sends_a_partial_line(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    port, _seen = await recording_backend(nursery, b"prompt> ")
    route = framed_route(port, framing="lines", **{"flush-timeout": 0.5})
    server = await start(nursery, route)
    client = await RawClient.tcp(server.port)
    try:
        assert (await client.ws_handshake("/t/")).status == 101
        await client.send(client_frame(OP_TEXT, b"go"))
        frame = await client.read_frame()
        assert frame.payload == b"prompt> "
    finally:
        await client.aclose()


async def test_a_length_over_max_message_size_closes_1011(nursery: trio.Nursery) -> None:
    port, _seen = await recording_backend(nursery, b"\xff\xff\xff\xff")
    server = await start(nursery, framed_route(port, framing="length-prefixed", **{"max-message-size": 1000}))
    _got, code, reason = await ws_client(until_closed, server.url("/t/", scheme="ws"), ("x",))
    assert code == 1011
    assert "4294967295-byte message (max-message-size is 1000)" in reason


async def test_a_client_reset_stops_the_program(nursery: trio.Nursery, raw: RawClients, tmp_path: Path) -> None:
    pids = tmp_path / "pid"
    source = f"echo $$ > {pids}; echo ready; while true; do sleep 1; done"
    server = await start(nursery, process_route(["sh", "-c", source]))
    client = await raw.tcp(server.port)
    assert (await client.ws_handshake("/p/")).status == 101
    assert (await client.read_frame()).payload == b"ready"
    pid = int(pids.read_text())
    sock = client.stream.socket
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST, no CLOSE frame, no FIN
    await wait_pid_gone(pid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
async def test_programs_do_not_outlive_the_server(nursery: trio.Nursery, tmp_path: Path, sig: int) -> None:
    pids = tmp_path / "pid"
    source = f"trap '' TERM; echo $$ > {pids}; echo ready; while true; do sleep 1; done"
    cli = await start_cli(nursery, "run", "--listen", "127.0.0.1:0", "--", "sh", "-c", source, cwd=tmp_path)
    client = await RawClient.tcp(cli.port)
    try:
        assert (await client.ws_handshake("/")).status == 101
        assert (await client.read_frame()).payload == b"ready"
        pid = int(pids.read_text())
        cli.process.send_signal(sig)
        if sig == signal.SIGTERM:
            # The graceful stop: CLOSE 1001 to the client, then the program's group is ended.
            frame = await client.read_frame()
            assert frame.close_code == 1001
            await client.send(client_close_frame(1001))
        await cli.stop(None)
        await wait_pid_gone(pid)  # after SIGKILL of wstrio: its keeper kills the group
    finally:
        await client.aclose()
