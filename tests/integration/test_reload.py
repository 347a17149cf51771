"""Reloading the configuration (``Server.reload``, SIGHUP) without dropping what is open.

Every test keeps WebSocket tunnels open across the reload and checks that
they still carry data both ways, to the backend they started with, while
new connections (and the next request on a connection already open) get
the new routes.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Any

import pytest
import trio

import wstrio
from tests.helpers import (
    OP_CLOSE,
    OP_TEXT,
    PID_TAGGING_BACKEND,
    PROCESS_TIMEOUT,
    RawClient,
    RawClients,
    client_close_frame,
    client_frame,
    make_config,
    pid_alive,
    serve_tcp_backend,
    start_cli_server,
    start_server,
    toml_string,
    wait_pid_gone,
    write_python_backend,
)


async def tagged_backend(nursery: trio.Nursery, tag: bytes) -> int:
    """A TCP backend that answers every chunk with ``tag`` + the chunk; returns its port."""

    async def answer(stream: trio.SocketStream) -> None:
        try:
            while data := await stream.receive_some(65536):
                await stream.send_all(tag + data)
        except trio.BrokenResourceError:
            pass

    return await serve_tcp_backend(nursery, answer)


def tcp_route(path: str, port: int) -> dict[str, Any]:
    return {"path": path, "handler": "wstunnel", "backend": [{"host": "127.0.0.1", "port": port}]}


def spawned_route(path: str, program: Path, sock: Path) -> dict[str, Any]:
    backend = {"socket": str(sock), "bin-path": str(program), "max-procs": 1}  # one process: one pid per pool
    return {"path": path, "handler": "wstunnel", "backend": [backend]}


def config_of(routes: list[dict[str, Any]], **server: Any) -> wstrio.ServerConfig:
    return make_config({"server": {"shutdown-timeout": 0.25, **server}, "route": routes})


async def tunnel(raw: RawClients, port: int, path: str) -> RawClient:
    client = await raw.tcp(port)
    response = await client.ws_handshake(path)
    assert response.status == 101, (path, response.status)
    return client


async def roundtrip(client: RawClient, text: bytes) -> bytes:
    """Send ``text``; the payload of the frames that answer it (up to ``text`` at the end)."""
    await client.send(client_frame(OP_TEXT, text))
    got = b""
    while not got.endswith(text):
        frame = await client.read_frame()
        assert frame.opcode == OP_TEXT, frame
        got += frame.payload
    return got


async def status_of(port: int, path: str) -> int:
    client = await RawClient.tcp(port)
    try:
        response = await client.ws_handshake(path)
        return response.status
    finally:
        await client.aclose()


async def test_open_tunnels_keep_their_backend_and_new_ones_get_the_new_routes(
    nursery: trio.Nursery, raw: RawClients, tmp_path: Path
) -> None:
    a1, a2, b, d = [await tagged_backend(nursery, tag) for tag in (b"A1:", b"A2:", b"B:", b"D:")]
    program = write_python_backend(tmp_path / "tag.py", PID_TAGGING_BACKEND)
    first = config_of([tcp_route("/a/", a1), tcp_route("/b/", b), spawned_route("/c/", program, tmp_path / "c.sock")])
    server = await start_server(nursery, first)
    port = server.port
    ta, tb, tc = [await tunnel(raw, port, p) for p in ("/a/", "/b/", "/c/")]
    assert await roundtrip(ta, b"one") == b"A1:one"
    assert await roundtrip(tb, b"one") == b"B:one"
    before = await roundtrip(tc, b"one")
    pid = int(before.split(b":")[0])
    # A keep-alive connection asks for /d/ before and after: the next request gets the new routes.
    keep_alive = await raw.tcp(port)
    assert (await keep_alive.request(b"GET /d/ HTTP/1.1\r\nHost: localhost\r\n\r\n")).status == 404

    routes = [
        tcp_route("/a/", a2),  # changed
        spawned_route("/c/", program, tmp_path / "c.sock"),  # unchanged
        tcp_route("/d/", d),  # added
        spawned_route("/e/", program, tmp_path / "e.sock"),  # added, a new pool
    ]  # /b/ removed
    second = config_of(routes, listen=["127.0.0.1:0", "127.0.0.1:0"])  # one more listener
    report = await server.reload(second)
    assert (report.routes, report.routes_kept) == (4, 1)
    assert (report.pools_kept, report.pools_started, report.pools_draining) == (1, 1, 0)
    assert report.listeners_added == ("127.0.0.1:0",)
    assert report.restart_needed == ()
    assert server.reloads == 1

    # What was open goes on, to the backends it started with.
    assert await roundtrip(ta, b"two") == b"A1:two"
    assert await roundtrip(tb, b"two") == b"B:two"
    assert await roundtrip(tc, b"two") == str(pid).encode() + b":two"
    # New connections get the new routes.
    assert await roundtrip(await tunnel(raw, port, "/a/"), b"new") == b"A2:new"
    assert await status_of(port, "/b/") == 404
    assert await roundtrip(await tunnel(raw, port, "/d/"), b"new") == b"D:new"
    # The unchanged pool kept its process; the new one runs another.
    assert await roundtrip(await tunnel(raw, port, "/c/"), b"new") == str(pid).encode() + b":new"
    other = await roundtrip(await tunnel(raw, port, "/e/"), b"new")
    assert other.endswith(b":new")
    assert int(other.split(b":")[0]) != pid
    # The next request on the connection opened before the reload.
    response = await keep_alive.request(b"GET /d/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert response.status != 404, "the keep-alive connection still sees the old routes"
    # The added listener serves the same routes.
    ports = [a.port for a in server.addresses]
    assert len(ports) == 2
    assert ports[0] == port
    assert await roundtrip(await tunnel(raw, ports[1], "/d/"), b"more") == b"D:more"

    # Back to one listener: the added one closes; the first stays, with its tunnels.
    report = await server.reload(config_of(routes, listen=["127.0.0.1:0"]))
    assert report.listeners_removed == ("127.0.0.1:0",)
    assert report.routes_kept == 4
    assert [a.port for a in server.addresses] == [port]
    with pytest.raises(OSError, match="all attempts to connect"):
        await trio.open_tcp_stream("127.0.0.1", ports[1])
    assert await roundtrip(ta, b"three") == b"A1:three"
    assert await roundtrip(await tunnel(raw, port, "/d/"), b"last") == b"D:last"


async def test_a_removed_spawned_backend_stops_after_its_last_tunnel(
    nursery: trio.Nursery, raw: RawClients, tmp_path: Path
) -> None:
    program = write_python_backend(tmp_path / "tag.py", PID_TAGGING_BACKEND)
    other = await tagged_backend(nursery, b"X:")
    server = await start_server(nursery, config_of([spawned_route("/c/", program, tmp_path / "c.sock")]))
    client = await tunnel(raw, server.port, "/c/")
    pid = int((await roundtrip(client, b"hi")).split(b":")[0])

    report = await server.reload(config_of([tcp_route("/x/", other)]))
    assert (report.pools_kept, report.pools_started, report.pools_draining) == (0, 0, 1)
    assert await status_of(server.port, "/c/") == 404
    # Its process still serves the tunnel that was open.
    assert await roundtrip(client, b"still") == str(pid).encode() + b":still"
    assert pid_alive(pid)
    # The client leaves: the last connection is gone, so is the process.
    await client.send(client_close_frame(1000))
    frames = await client.read_frames_until_close(reply=False)
    assert frames[-1].opcode == OP_CLOSE
    await wait_pid_gone(pid)


async def test_drain_timeout_bounds_a_removed_backend(nursery: trio.Nursery, raw: RawClients, tmp_path: Path) -> None:
    program = write_python_backend(tmp_path / "tag.py", PID_TAGGING_BACKEND)
    server = await start_server(nursery, config_of([spawned_route("/c/", program, tmp_path / "c.sock")]))
    client = await tunnel(raw, server.port, "/c/")
    pid = int((await roundtrip(client, b"hi")).split(b":")[0])

    await server.reload(config_of([], **{"drain-timeout": 0.5}))
    # Nobody closes the tunnel: after drain-timeout the process is stopped, and the tunnel ends.
    await wait_pid_gone(pid)
    frames = await client.read_frames_until_close(reply=False)
    assert frames[-1].opcode == OP_CLOSE


async def test_a_reload_that_cannot_be_served_changes_nothing(
    nursery: trio.Nursery, raw: RawClients, tmp_path: Path
) -> None:
    a1, a2 = await tagged_backend(nursery, b"A1:"), await tagged_backend(nursery, b"A2:")
    server = await start_server(nursery, config_of([tcp_route("/a/", a1)]))
    open_tunnel = await tunnel(raw, server.port, "/a/")
    changed = [tcp_route("/a/", a2), tcp_route("/new/", a2)]

    # 1. A new address that is taken.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with pytest.raises(OSError, match=rf"cannot listen on 127\.0\.0\.1:{busy}"):
            await server.reload(config_of(changed, listen=["127.0.0.1:0", f"127.0.0.1:{busy}"]))
    # 2. A new bin-path program that cannot be started.
    dies = tmp_path / "dies.sh"
    dies.write_text("#!/bin/sh\nexit 7\n")
    dies.chmod(0o644)  # not executable
    with pytest.raises(BaseException) as caught:  # noqa: PT011 - the group is checked below
        await server.reload(config_of([*changed, spawned_route("/dies/", dies, tmp_path / "d.sock")]))
    assert _contains(caught.value, wstrio.BackendExited), caught.value
    # 3. A certificate that is not there.
    tls = {"certificate": str(tmp_path / "missing.pem"), "private-key": str(tmp_path / "missing.key")}
    with pytest.raises(wstrio.ConfigError, match=r"server\.tls"):
        await server.reload(config_of(changed, tls=tls))

    assert server.reloads == 0
    assert await roundtrip(await tunnel(raw, server.port, "/a/"), b"x") == b"A1:x"
    assert await status_of(server.port, "/new/") == 404
    assert await roundtrip(open_tunnel, b"y") == b"A1:y"
    assert [a.port for a in server.addresses] == [server.port]


def _contains(exc: BaseException, kind: type[BaseException]) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_contains(e, kind) for e in exc.exceptions)
    return isinstance(exc, kind)


async def test_limits_follow_the_reload(nursery: trio.Nursery, raw: RawClients) -> None:
    a = await tagged_backend(nursery, b"A:")
    server = await start_server(nursery, config_of([tcp_route("/a/", a)]))
    first = await tunnel(raw, server.port, "/a/")
    # max-tunnels counts the tunnels of every configuration: the one open before counts.
    await server.reload(config_of([tcp_route("/a/", a), tcp_route("/b/", a)], **{"max-tunnels": 1}))
    assert await status_of(server.port, "/b/") == 503
    await first.send(client_close_frame(1000))
    await first.read_frames_until_close(reply=False)
    await first.aclose()
    with trio.fail_after(PROCESS_TIMEOUT):
        while server.statistics().tunnels_active:  # noqa: ASYNC110 - a counter, not an event
            await trio.sleep(0.01)
    assert await roundtrip(await tunnel(raw, server.port, "/b/"), b"z") == b"A:z"


# --------------------------------------------------------------------------
# The command line: SIGHUP re-reads the file
# --------------------------------------------------------------------------


def write_config(path: Path, routes: list[tuple[str, int]], *, workers: int = 1, extra: str = "") -> None:
    lines = ["[server]", 'listen = ["127.0.0.1:0"]', "shutdown-timeout = 1", f"workers = {workers}", extra]
    for route, port in routes:
        lines += ["[[route]]", f"path = {toml_string(route)}", 'handler = "wstunnel"']
        lines += ["[[route.backend]]", 'host = "127.0.0.1"', f"port = {port}"]
    path.write_text("\n".join(lines) + "\n")


async def wait_line(lines: list[str], needle: str, start: int = 0) -> str:
    with trio.fail_after(PROCESS_TIMEOUT):
        while True:
            for line in lines[start:]:
                if needle in line:
                    return line
            await trio.sleep(0.02)


async def test_sighup_reloads_the_file_and_keeps_tunnels(
    nursery: trio.Nursery, raw: RawClients, tmp_path: Path
) -> None:
    a1, a2 = await tagged_backend(nursery, b"A1:"), await tagged_backend(nursery, b"A2:")
    config = tmp_path / "wstrio.toml"
    write_config(config, [("/a/", a1)])
    cli = await start_cli_server(nursery, config)
    open_tunnel = await tunnel(raw, cli.port, "/a/")
    assert await roundtrip(open_tunnel, b"m1") == b"A1:m1"

    write_config(config, [("/a/", a2), ("/b/", a1)])
    mark = len(cli.stderr)
    cli.process.send_signal(signal.SIGHUP)
    line = await wait_line(cli.stderr, "SIGHUP: reloaded", mark)
    assert str(config) in line
    assert "2 routes (0 unchanged)" in line
    assert await roundtrip(open_tunnel, b"m2") == b"A1:m2"
    assert await roundtrip(await tunnel(raw, cli.port, "/a/"), b"m3") == b"A2:m3"
    assert await roundtrip(await tunnel(raw, cli.port, "/b/"), b"m4") == b"A1:m4"

    # An invalid file: logged with the file and key; the running configuration stays.
    config.write_text(config.read_text().replace("shutdown-timeout = 1", "shutdown-timeout = -1"))
    mark = len(cli.stderr)
    cli.process.send_signal(signal.SIGHUP)
    line = await wait_line(cli.stderr, "the running one stays", mark)
    text = "\n".join(cli.stderr[mark:])
    assert f"{config}: server.shutdown-timeout" in text, text
    assert await roundtrip(await tunnel(raw, cli.port, "/b/"), b"m5") == b"A1:m5"
    assert await roundtrip(open_tunnel, b"m6") == b"A1:m6"
    assert await cli.stop() == 0


@pytest.mark.slow
async def test_sighup_with_workers_starts_new_workers_and_the_old_finish(
    nursery: trio.Nursery, raw: RawClients, tmp_path: Path
) -> None:
    a1, a2 = await tagged_backend(nursery, b"A1:"), await tagged_backend(nursery, b"A2:")
    config = tmp_path / "wstrio.toml"
    write_config(config, [("/a/", a1)], workers=2)
    cli = await start_cli_server(nursery, config)
    await wait_line(cli.stderr, "started worker 1")
    open_tunnel = await tunnel(raw, cli.port, "/a/")
    assert await roundtrip(open_tunnel, b"m1") == b"A1:m1"

    write_config(config, [("/a/", a2)], workers=2)
    mark = len(cli.stderr)
    cli.process.send_signal(signal.SIGHUP)
    line = await wait_line(cli.stderr, "SIGHUP: reloaded", mark)
    assert "2 new workers serve it; 2 old ones finish their connections" in line
    # The old worker with the tunnel keeps it; the other old one had nothing open and exits.
    await wait_line(cli.stderr, "of the previous configuration exited", mark)
    assert await roundtrip(open_tunnel, b"m2") == b"A1:m2"
    for n in range(4):  # whichever new worker takes it
        assert await roundtrip(await tunnel(raw, cli.port, "/a/"), b"m3") == b"A2:m3", n
    # The last old worker goes when its tunnel ends.
    exited = sum("of the previous configuration exited" in x for x in cli.stderr[mark:])
    assert exited == 1
    await open_tunnel.send(client_close_frame(1000))
    await open_tunnel.read_frames_until_close(reply=False)
    with trio.fail_after(PROCESS_TIMEOUT):
        while sum("of the previous configuration exited" in x for x in cli.stderr[mark:]) < 2:  # noqa: ASYNC110
            await trio.sleep(0.05)
    assert await cli.stop() == 0
