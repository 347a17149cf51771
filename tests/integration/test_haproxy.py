"""Two wstrio instances behind a real HAProxy (issue 15, item 6), reloaded and stopped one by one.

HAProxy (Debian's ``haproxy``) balances TCP connections round-robin over two
``wstrio serve`` processes, with the PROXY protocol v2 to them and health
checks against their ``health-path``; each wstrio tunnels to its own backend
with ``send-proxy-protocol``, so the backend can say which wstrio served a
client and who that client was.  The test shows: clients spread over both;
the backend sees the client's own port (through HAProxy and wstrio); one
wstrio stopped gracefully gives its clients everything they were sent and
CLOSE 1001, and they reconnect to the other one.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import trio

from tests.helpers import (
    OP_CLOSE,
    OP_TEXT,
    PROCESS_TIMEOUT,
    CliServer,
    ProxyLineBackend,
    RawClient,
    client_frame,
    handshake_request,
    missing_tool,
    start_cli_server,
    toml_string,
    unused_tcp_port,
)

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(missing_tool(HAPROXY), reason="haproxy is not installed (apt-get install haproxy)"),
]

HAPROXY_CFG = """\
global
    maxconn 1000

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch

frontend websockets
    bind 127.0.0.1:{port}
    default_backend wstrio

backend wstrio
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    server a 127.0.0.1:{a} send-proxy-v2 check check-send-proxy inter 200ms fall 1 rise 1
    server b 127.0.0.1:{b} send-proxy-v2 check check-send-proxy inter 200ms fall 1 rise 1
"""


async def _wstrio(nursery: trio.Nursery, tmp_path: Path, name: str) -> CliServer:
    sock = tmp_path / f"{name}.sock"
    listener = trio.socket.socket(trio.socket.AF_UNIX)
    await listener.bind(str(sock))
    listener.listen(64)
    await nursery.start(trio.serve_listeners, ProxyLineBackend(name), [trio.SocketListener(listener)])
    config = tmp_path / f"{name}.toml"
    config.write_text(
        "[server]\n"
        'listen = [{ address = "127.0.0.1:0", proxy-protocol = true }]\n'
        'trusted-proxies = ["127.0.0.1"]\n'
        'health-path = "/healthz"\n'
        "shutdown-timeout = 5\n\n"
        '[[route]]\npath = "/ws/"\nhandler = "wstunnel"\n'
        f'  [[route.backend]]\n  socket = {toml_string(sock)}\n  send-proxy-protocol = "v1"\n'
    )
    return await start_cli_server(nursery, config)


async def _checked(cli: CliServer) -> None:
    """Wait until HAProxy's health check has reached ``cli`` (it is UP then)."""
    with trio.fail_after(PROCESS_TIMEOUT):
        while not any('"GET /healthz HTTP/1.0" 200' in line for line in cli.stderr):  # noqa: ASYNC110
            await trio.sleep(0.05)


async def _open(port: int, path: str = "/ws/") -> tuple[RawClient, str]:
    """A WebSocket through HAProxy; returns it and the backend's first message."""
    client = await RawClient.tcp(port)
    await client.send(handshake_request(path))
    assert (await client.read_head()).status == 101
    hello = (await client.read_frame()).payload.decode()
    return client, hello


async def _echo(client: RawClient, count: int) -> None:
    for i in range(count):
        text = f"message {i}".encode()
        await client.send(client_frame(OP_TEXT, text))
        assert (await client.read_frame()).payload == text


async def test_two_instances_behind_haproxy(nursery: trio.Nursery, tmp_path: Path) -> None:
    a = await _wstrio(nursery, tmp_path, "a")
    b = await _wstrio(nursery, tmp_path, "b")
    port = unused_tcp_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(port=port, a=a.port, b=b.port))
    haproxy = await trio.lowlevel.open_process([HAPROXY, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL)
    try:
        await _checked(a)
        await _checked(b)
        clients = []
        for _ in range(4):
            client, hello = await _open(port)
            name, _serves, source = hello.split()
            # The backend knows the client's own port: HAProxy -> PROXY v2 -> wstrio -> PROXY v1.
            assert source == f"127.0.0.1:{client.stream.socket.getsockname()[1]}"
            clients.append((client, name))
        assert sorted(name for _, name in clients) == ["a", "a", "b", "b"], "round-robin over both"
        for client, _name in clients:
            await _echo(client, 20)
        # A configuration change, rolled out by SIGHUP to each instance: a new route.
        # Every tunnel open through HAProxy goes on; the new route works on both.
        for name, cli in (("a", a), ("b", b)):
            config = tmp_path / f"{name}.toml"
            text = config.read_text()
            config.write_text(text + text[text.index("[[route]]") :].replace('path = "/ws/"', 'path = "/v2/"'))
            mark = len(cli.stderr)
            cli.process.send_signal(signal.SIGHUP)
            with trio.fail_after(PROCESS_TIMEOUT):
                while not any("SIGHUP: reloaded" in line for line in cli.stderr[mark:]):  # noqa: ASYNC110
                    await trio.sleep(0.05)
        for client, _name in clients:
            await _echo(client, 5)
        served = set()
        for _ in range(4):
            client, hello = await _open(port, "/v2/")
            served.add(hello.split()[0])
            await _echo(client, 2)
            await client.aclose()
        assert served == {"a", "b"}
        # Stop a gracefully: its clients get CLOSE 1001 (nothing they were sent is lost) ...
        a.process.terminate()
        for client, name in clients:
            if name == "a":
                frame = await client.read_frame()
                assert (frame.opcode, frame.close_code) == (OP_CLOSE, 1001)
                await client.send(client_frame(OP_CLOSE, frame.payload[:2]))
                await client.aclose()
        assert await a.stop(None) == 0
        # ... and reconnect, to b; b's own clients never noticed.
        for _ in range(2):
            with trio.fail_after(PROCESS_TIMEOUT):
                while True:
                    try:
                        client, hello = await _open(port)
                    except (AssertionError, trio.BrokenResourceError, OSError):
                        await trio.sleep(0.2)  # HAProxy has not seen a go down yet
                        continue
                    break
            assert hello.startswith("b serves ")
            await _echo(client, 5)
            await client.aclose()
        for client, name in clients:
            if name == "b":
                await _echo(client, 5)
                await client.aclose()
    finally:
        haproxy.terminate()
        with trio.move_on_after(PROCESS_TIMEOUT):
            await haproxy.wait()
        if haproxy.returncode is None:
            haproxy.kill()
            await haproxy.wait()
