"""wstrio behind a real nginx, with the configurations of docs/deployment.md ("Behind nginx") as they are written.

The blocks are read from the document, so what it shows is what is tested;
only the addresses change (and the test adds the ``X-Forwarded-For`` line
the text tells you to add).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers import (
    OP_TEXT,
    PROCESS_TIMEOUT,
    ProxyLineBackend,
    RawClient,
    client_frame,
    handshake_request,
    missing_tool,
    start_server,
    unused_tcp_port,
)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
DEPLOYMENT = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(missing_tool(NGINX), reason="nginx is not installed (apt-get install nginx-light)"),
]


def documented_blocks() -> list[str]:
    """The ```nginx blocks of the "Behind nginx" section."""
    text = DEPLOYMENT.read_text()
    section = text[text.index("## Behind nginx") :]
    section = section[: section.index("\n## ", 3)]
    return re.findall(r"```nginx\n(.*?)```", section, re.DOTALL)


async def wstrio_behind(nursery: trio.Nursery, tmp_path: Path, name: str, server: dict[str, Any]) -> int:
    sock = tmp_path / f"{name}.sock"
    listener = trio.socket.socket(trio.socket.AF_UNIX)
    await listener.bind(str(sock))
    listener.listen(64)
    await nursery.start(trio.serve_listeners, ProxyLineBackend(), [trio.SocketListener(listener)])
    route = {
        "path": "/ws/",
        "handler": "wstunnel",
        "backend": [{"socket": str(sock), "send-proxy-protocol": "v1"}],
    }
    started = await start_server(nursery, {"server": {"shutdown-timeout": 0.5, **server}, "route": [route]})
    return started.port


async def run_nginx(nursery: trio.Nursery, tmp_path: Path, body: str, *, stream: bool = False) -> None:
    """Start nginx (one process, in the foreground) with ``body`` as the main context's tail."""
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / sub).mkdir(exist_ok=True)
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        (f"load_module {STREAM_MODULE};\n" if stream else "")
        + f"pid {tmp_path}/nginx.pid;\nerror_log stderr notice;\nevents {{}}\n"
        + body
    )
    process = await trio.lowlevel.open_process(
        [NGINX, "-p", str(tmp_path), "-e", "stderr", "-c", str(conf), "-g", "daemon off; master_process off;"],
        stdout=subprocess.DEVNULL,
    )

    async def reap() -> None:
        try:
            await trio.sleep_forever()
        finally:
            process.terminate()
            with trio.CancelScope(shield=True), trio.move_on_after(PROCESS_TIMEOUT):
                await process.wait()
            if process.returncode is None:
                process.kill()

    nursery.start_soon(reap)


async def open_through(port: int) -> tuple[RawClient, str]:
    """A WebSocket through nginx (retried until nginx listens); it and the backend's first message."""
    with trio.fail_after(PROCESS_TIMEOUT):
        while True:
            try:
                client = await RawClient.tcp(port)
            except OSError:
                await trio.sleep(0.05)
                continue
            break
    await client.send(handshake_request("/ws/"))
    assert (await client.read_head()).status == 101
    return client, (await client.read_frame()).payload.decode()


async def echo(client: RawClient, count: int) -> None:
    for i in range(count):
        text = f"message {i}".encode()
        await client.send(client_frame(OP_TEXT, text))
        got = b""
        while len(got) < len(text):
            got += (await client.read_frame()).payload
        assert got == text


async def test_the_documented_location_block_passes_websockets(nursery: trio.Nursery, tmp_path: Path) -> None:
    location = documented_blocks()[0]
    assert "proxy_set_header Upgrade $http_upgrade;" in location
    wstrio = await wstrio_behind(nursery, tmp_path, "w", {"forwarded-trust": ["127.0.0.1"]})
    port = unused_tcp_port()
    location = location.replace("127.0.0.1:8080", f"127.0.0.1:{wstrio}").replace(
        "proxy_set_header Host $host;",
        "proxy_set_header Host $host;\n    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
    )
    http = (
        "http {\n  access_log off;\n"
        f"  client_body_temp_path {tmp_path}/body; proxy_temp_path {tmp_path}/proxy;\n"
        f"  fastcgi_temp_path {tmp_path}/fastcgi; uwsgi_temp_path {tmp_path}/uwsgi; scgi_temp_path {tmp_path}/scgi;\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n{location}\n  }}\n}}\n"
    )
    await run_nginx(nursery, tmp_path, http)
    client, hello = await open_through(port)
    try:
        # From X-Forwarded-For (trusted): the address without a port, as the docs say.
        assert hello == "serves 127.0.0.1:0"
        await echo(client, 20)
    finally:
        await client.aclose()


@pytest.mark.skipif(not STREAM_MODULE.exists(), reason="nginx's stream module (apt-get install libnginx-mod-stream)")
async def test_the_documented_stream_block_sends_the_proxy_protocol(nursery: trio.Nursery, tmp_path: Path) -> None:
    block = documented_blocks()[1]
    assert "proxy_protocol on;" in block
    server = {"listen": [{"address": "127.0.0.1:0", "proxy-protocol": True}], "trusted-proxies": ["127.0.0.1"]}
    first = await wstrio_behind(nursery, tmp_path, "a", server)
    second = await wstrio_behind(nursery, tmp_path, "b", server)
    port = unused_tcp_port()
    block = (
        block.replace("10.0.0.11:8080", f"127.0.0.1:{first}")
        .replace("10.0.0.12:8080", f"127.0.0.1:{second}")
        .replace("listen 80;", f"listen 127.0.0.1:{port};")
    )
    await run_nginx(nursery, tmp_path, block, stream=True)
    for _ in range(4):
        client, hello = await open_through(port)
        try:
            # The client's own address and port, through nginx -> PROXY v1 -> wstrio -> PROXY v1.
            assert hello == f"serves 127.0.0.1:{client.stream.socket.getsockname()[1]}"
            await echo(client, 5)
        finally:
            await client.aclose()
