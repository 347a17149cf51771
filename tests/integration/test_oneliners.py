"""``wstrio run`` (websocketd) and ``wstrio tunnel`` (websockify): real processes, real clients, a real browser."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from websockets.sync.client import connect

import wstrio
from tests.helpers import EXAMPLES, serve_echo_tcp, start_cli, ws_client
from tests.integration.conftest import Chromium


def wstrio_cli(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wstrio", *argv], capture_output=True, text=True, timeout=30, cwd=cwd, check=False
    )


def test_run_prints_the_equivalent_config(tmp_path: Path) -> None:
    done = wstrio_cli(
        "run", "--listen", ":9000", "--static", "www", "--origin", "https://a.example", "--print-config",
        "--", "./count.sh", "an arg", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# Made by: wstrio run --listen :9000 --static www --origin https://a.example --")
    (tmp_path / "wstrio.toml").write_text(done.stdout)
    config = wstrio.load_config(tmp_path / "wstrio.toml")  # the file serves the same thing
    (route,) = config.routes
    assert (route.handler, route.path, route.command) == ("process", "/", ("./count.sh", "an arg"))
    assert route.origins == ("https://a.example",)
    assert route.effective_framing == "lines"
    assert config.document_root == tmp_path / "www"
    assert str(config.listen[0]) == "0.0.0.0:9000"


def test_tunnel_prints_the_equivalent_config(tmp_path: Path) -> None:
    done = wstrio_cli("tunnel", "--web", "/usr/share/novnc", "--print-config", "localhost:5900", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (tmp_path / "wstrio.toml").write_text(done.stdout)
    (route,) = wstrio.load_config(tmp_path / "wstrio.toml").routes
    assert (route.handler, route.path, route.frame_type) == ("wstunnel", "/", "binary")
    assert (route.backends[0].host, route.backends[0].port) == ("localhost", 5900)
    done = wstrio_cli("tunnel", "--text", "--print-config", "unix:/run/vnc.sock")
    assert done.returncode == 0, done.stderr
    assert 'socket = "/run/vnc.sock"' in done.stdout
    assert "frame-type" not in done.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run"], "wstrio run needs the program to run"),
        (["run", "--"], "wstrio run needs the program to run"),
        (["tunnel", "nowhere"], "TARGET must be host:port or unix:/path"),
        (["run", "--listen", "nonsense", "--", "cat"], "server.listen"),
    ],
)
def test_bad_command_lines_say_what_is_wrong(argv: list[str], message: str) -> None:
    done = wstrio_cli(*argv)
    assert done.returncode == 2
    assert message in done.stderr


async def test_run_serves_a_program_per_websocket(nursery: trio.Nursery, tmp_path: Path) -> None:
    cli = await start_cli(nursery, "run", "--listen", "127.0.0.1:0", "--", "cat", cwd=tmp_path)

    def client() -> list[str | bytes]:
        with connect(f"ws://127.0.0.1:{cli.port}/any/path") as ws:
            ws.send("first")
            ws.send("second")
            return [ws.recv(timeout=10), ws.recv(timeout=10)]

    assert await ws_client(client) == ["first", "second"]
    assert await cli.stop() == 0


async def test_tunnel_serves_a_tcp_target(nursery: trio.Nursery, tmp_path: Path) -> None:
    port = await serve_echo_tcp(nursery)
    cli = await start_cli(nursery, "tunnel", "--listen", "127.0.0.1:0", f"127.0.0.1:{port}", cwd=tmp_path)

    def client() -> str | bytes:
        with connect(f"ws://127.0.0.1:{cli.port}/websockify") as ws:
            ws.send(b"\x00\x01binary")
            return ws.recv(timeout=10)

    assert await ws_client(client) == b"\x00\x01binary"
    assert await cli.stop() == 0


@pytest.mark.browser
@pytest.mark.slow
async def test_the_count_page_with_wstrio_run_and_cat(
    nursery: trio.Nursery, tmp_path: Path, chromium: Chromium
) -> None:
    www = EXAMPLES / "count" / "www"
    cli = await start_cli(nursery, "run", "--listen", "127.0.0.1:0", "--static", str(www), "--", "cat", cwd=tmp_path)
    text = await chromium.page_text(f"http://127.0.0.1:{cli.port}/count.html", until="RECV: 5")
    # One message per line, without its newline: "RECV: 1", then the next SEND at once.
    assert re.findall(r"RECV: (\d+)\n", text) == ["1", "2", "3", "4", "5"], text
    assert "RECV: 1\nSEND: 2" in text, text


@pytest.mark.parametrize("name", ["count.sh", "echo.py", "greeter.py"])
async def test_the_websocketd_examples_as_their_comments_say(nursery: trio.Nursery, name: str) -> None:
    here = EXAMPLES / "websocketd"
    cli = await start_cli(nursery, "run", "--listen", "127.0.0.1:0", "--", f"./{name}", cwd=here)

    def client() -> list[str | bytes]:
        with connect(f"ws://127.0.0.1:{cli.port}/some/where?name=Grace") as ws:
            if name == "count.sh":
                return [ws.recv(timeout=10) for _ in range(10)]
            if name == "echo.py":
                ws.send("one")
                ws.send("two")
                return [ws.recv(timeout=10), ws.recv(timeout=10)]
            first = ws.recv(timeout=10)
            ws.send("shout")
            return [first, ws.recv(timeout=10)]

    got = await ws_client(client)
    expected = {
        "count.sh": [str(i) for i in range(1, 11)],
        "echo.py": ["one", "two"],
        "greeter.py": ["hello Grace, from 127.0.0.1", "Grace said: shout"],
    }
    assert got == expected[name]
    assert await cli.stop() == 0


@pytest.mark.browser
@pytest.mark.slow
async def test_the_greeter_page_in_chromium(nursery: trio.Nursery, chromium: Chromium) -> None:
    here = EXAMPLES / "websocketd"
    cli = await start_cli(nursery, "run", "--listen", "127.0.0.1:0", "--static", ".", "--", "./greeter.py", cwd=here)
    text = await chromium.page_text(f"http://127.0.0.1:{cli.port}/", until="Ada said: hi")
    assert "RECV: hello Ada, from 127.0.0.1\nRECV: Ada said: hi" in text, text
