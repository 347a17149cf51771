"""TLS end to end: https/wss, ALPN, per-listener TLS, certificate reload (SIGHUP).

Certificates come from trustme.  The independent clients are ``websockets``
(sync, in a worker thread, for ``wss://``), h2's client (:mod:`tests.h2client`)
over :class:`trio.SSLStream` with ALPN, and raw TLS streams for HTTP/1.1.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import ssl
import sys
from pathlib import Path

import attrs
import h11
import pytest
import trio
import trustme

import wstrio
from tests.h2client import client_ssl_context, open_h2_client
from tests.helpers import (
    echo_route,
    serve_echo_tcp,
    start_cli_server,
    start_server,
    toml_string,
    ws_client,
    ws_connect,
    ws_receive_bytes,
)
from tests.integration.gateway_support import make_docroot
from wstrio._cli import main
from wstrio._io.http.tls import TlsListener


def write_cert(ca: trustme.CA, directory: Path) -> dict[str, str]:
    """Certificate and key for localhost/127.0.0.1 in ``directory``; returns the ``[server.tls]`` table."""
    cert = ca.issue_cert("localhost", "127.0.0.1")
    (directory / "cert.pem").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(directory / "key.pem")
    return {"certificate": str(directory / "cert.pem"), "private-key": str(directory / "key.pem")}


async def tls_echo_server(nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA, **server: object) -> wstrio.Server:
    port = await serve_echo_tcp(nursery)
    www = tmp_path / "www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_bytes(b"<h1>secure</h1>\n")
    settings = {"tls": write_cert(ca, tmp_path), "document-root": str(www), **server}
    return await start_server(nursery, {"server": settings, "route": [echo_route(port)]})


async def https_get_h1(port: int, ctx: ssl.SSLContext, path: str = "/") -> tuple[bytes, str | None]:
    """GET over TLS offering only http/1.1; returns (response bytes, ALPN)."""
    stream = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", port), ctx, server_hostname="localhost")
    async with stream:
        await stream.do_handshake()
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
        return data, stream.selected_alpn_protocol()


def h1_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


async def test_https_serves_http11_and_h2_by_alpn(nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA) -> None:
    server = await tls_echo_server(nursery, tmp_path, ca)
    reply, alpn = await https_get_h1(server.port, h1_context(ca))
    assert alpn == "http/1.1"
    assert reply.startswith(b"HTTP/1.1 200")
    assert reply.endswith(b"<h1>secure</h1>\n")
    async with open_h2_client("127.0.0.1", server.port, ssl_context=client_ssl_context(ca)) as client:
        status, _, body = await client.get("/")
        assert (status, body) == (200, b"<h1>secure</h1>\n")


async def test_no_alpn_means_http11(nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA) -> None:
    server = await tls_echo_server(nursery, tmp_path, ca)
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    reply, alpn = await https_get_h1(server.port, ctx)
    assert alpn is None
    assert reply.startswith(b"HTTP/1.1 200")


async def test_http2_off_offers_only_http11_by_alpn(nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA) -> None:
    server = await tls_echo_server(nursery, tmp_path, ca, http2=False)
    stream = trio.SSLStream(
        await trio.open_tcp_stream("127.0.0.1", server.port), client_ssl_context(ca), server_hostname="localhost"
    )
    async with stream:
        await stream.do_handshake()
        assert stream.selected_alpn_protocol() == "http/1.1"


async def test_wss_with_the_websockets_client(nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA) -> None:
    server = await tls_echo_server(nursery, tmp_path, ca)
    ctx = h1_context(ca)

    def client(url: str) -> list[str]:
        with ws_connect(url, ssl=ctx) as ws:
            out = []
            for text in ("secure", "wss " * 20000):
                ws.send(text)
                # One message per backend read, as lighttpd: join them.
                out.append("".join(str(m) for m in ws_receive_bytes(ws, len(text))))
            return out

    assert await ws_client(client, server.url("/ws/", scheme="wss")) == ["secure", "wss " * 20000]


async def test_websocket_over_h2_over_tls(nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA) -> None:
    server = await tls_echo_server(nursery, tmp_path, ca)
    async with open_h2_client("127.0.0.1", server.port, ssl_context=client_ssl_context(ca)) as client:
        sockets = [await client.websocket("/ws/") for _ in range(10)]
        for i, ws in enumerate(sockets):
            await ws.send_text(f"stream {i}")
        for i, ws in enumerate(sockets):
            assert await ws.receive_message() == f"stream {i}"
        for ws in sockets:
            assert (await ws.close()).code == 1000


async def test_not_tls_on_a_tls_listener_is_dropped(nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA) -> None:
    server = await tls_echo_server(nursery, tmp_path, ca)
    async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(5):
            while await stream.receive_some(65536):
                pass  # whatever TLS alert comes, then EOF
    reply, _ = await https_get_h1(server.port, h1_context(ca))
    assert reply.startswith(b"HTTP/1.1 200")


async def test_silent_client_times_out_in_the_handshake(nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA) -> None:
    server = await tls_echo_server(nursery, tmp_path, ca, **{"max-read-idle": 0.5})
    async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
        with trio.fail_after(5):
            assert await stream.receive_some(65536) == b""


async def test_plain_and_tls_listeners_side_by_side(nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA) -> None:
    port = await serve_echo_tcp(nursery)
    server = await start_server(
        nursery,
        {
            "server": {
                "listen": [{"address": "127.0.0.1:0", "tls": False}, "127.0.0.1:0"],
                "tls": write_cert(ca, tmp_path),
            },
            "route": [echo_route(port)],
        },
    )
    ports = {isinstance(x, TlsListener): x.socket.getsockname()[1] for x in server.listeners}  # type: ignore[attr-defined]

    def plain(url: str) -> str:
        with ws_connect(url) as ws:
            ws.send("plain")
            return str(ws.recv(timeout=10))

    def secure(url: str) -> str:
        with ws_connect(url, ssl=h1_context(ca)) as ws:
            ws.send("secure")
            return str(ws.recv(timeout=10))

    assert await ws_client(plain, f"ws://127.0.0.1:{ports[False]}/ws/") == "plain"
    assert await ws_client(secure, f"wss://127.0.0.1:{ports[True]}/ws/") == "secure"


async def test_reload_serves_the_new_certificate_and_keeps_open_tunnels(
    nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA
) -> None:
    server = await tls_echo_server(nursery, tmp_path, ca)
    async with open_h2_client("127.0.0.1", server.port, ssl_context=client_ssl_context(ca)) as old:
        tunnel = await old.websocket("/ws/")
        await tunnel.send_text("before")
        assert await tunnel.receive_message() == "before"

        new_ca = trustme.CA()
        write_cert(new_ca, tmp_path)
        assert server.reload_certificates() == 1

        # New connections get the new certificate...
        async with open_h2_client("127.0.0.1", server.port, ssl_context=client_ssl_context(new_ca)) as fresh:
            status, _, _ = await fresh.get("/")
            assert status == 200
        with pytest.raises(trio.BrokenResourceError):
            await https_get_h1(server.port, h1_context(ca))
        # ...and the tunnel opened before is undisturbed.
        await tunnel.send_text("after")
        assert await tunnel.receive_message() == "after"

        # A broken certificate is refused and the current one stays.
        (tmp_path / "key.pem").write_text("not a key\n")
        with pytest.raises(wstrio.ConfigError, match="private-key"):
            server.reload_certificates()
        reply, _ = await https_get_h1(server.port, h1_context(new_ca))
        assert reply.startswith(b"HTTP/1.1 200")
        assert (await tunnel.close()).code == 1000


async def test_startup_fails_with_a_clear_error_for_a_bad_key(tmp_path: Path, ca: trustme.CA) -> None:
    tls = write_cert(ca, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    tls["private-key"] = write_cert(trustme.CA(), other)["private-key"]
    config = wstrio.config_from_mapping({"server": {"listen": ["127.0.0.1:0"], "tls": tls}})
    with pytest.raises(wstrio.ConfigError, match="does not belong to the certificate"):
        await wstrio.serve(config)  # before binding anything


@pytest.mark.slow
async def test_sighup_reloads_the_certificate_of_the_cli_server(
    nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA
) -> None:
    tls = write_cert(ca, tmp_path)
    config = tmp_path / "tls.toml"
    config.write_text(
        '[server]\nlisten = ["127.0.0.1:0"]\n'
        f"[server.tls]\ncertificate = {toml_string(tls['certificate'])}\n"
        f"private-key = {toml_string(tls['private-key'])}\n"
    )
    cli = await start_cli_server(nursery, config)
    reply, _ = await https_get_h1(cli.port, h1_context(ca))
    assert reply.startswith(b"HTTP/1.1 404")  # no document root: the TLS part is what counts
    new_ca = trustme.CA()
    write_cert(new_ca, tmp_path)
    cli.process.send_signal(signal.SIGHUP)
    with trio.fail_after(10):
        while not any("SIGHUP: reloaded" in line for line in cli.stderr):  # noqa: ASYNC110
            await trio.sleep(0.05)  # the child's log is the only signal there is
    reply, _ = await https_get_h1(cli.port, h1_context(new_ca))
    assert reply.startswith(b"HTTP/1.1 404")
    assert await cli.stop() == 0


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tls"
README_OPENSSL = re.compile(r"^openssl req .*?-out cert\.pem$", re.MULTILINE | re.DOTALL)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
async def test_the_tls_example_with_the_readme_certificate(nursery: trio.Nursery, tmp_path: Path) -> None:
    # The example as a user runs it: the README's openssl command, `wstrio
    # check`, then the config (on free ports), a wss:// client and an h2 one.
    shutil.copytree(EXAMPLE, tmp_path / "tls")
    (tmp_path / "count").mkdir()
    shutil.copy2(EXAMPLE.parent / "count" / "echo.py", tmp_path / "count" / "echo.py")
    match = README_OPENSSL.search((EXAMPLE / "README.md").read_text())
    assert match is not None
    command = shlex.split(match.group(0).replace("\\\n", " "))
    await trio.run_process(command, cwd=str(tmp_path / "tls"), capture_stdout=True, capture_stderr=True)
    assert main(["check", str(tmp_path / "tls" / "wstrio.toml")]) == 0
    config = wstrio.load_config(tmp_path / "tls" / "wstrio.toml")
    assert [a.tls for a in config.listen] == [None, False]
    config = attrs.evolve(config, listen=tuple(attrs.evolve(a, port=0) for a in config.listen))
    server = await start_server(nursery, config)
    ports = {isinstance(x, TlsListener): x.socket.getsockname()[1] for x in server.listeners}  # type: ignore[attr-defined]
    ctx = ssl.create_default_context(cafile=str(tmp_path / "tls" / "cert.pem"))

    def count(url: str, ssl_context: ssl.SSLContext | None) -> list[str]:
        with ws_connect(url, ssl=ssl_context) as ws:
            out = []
            for i in range(1, 6):
                ws.send(f"{i}\n")
                out.append(str(ws.recv(timeout=10)))
            return out

    expected = [f"{i}\n" for i in range(1, 6)]
    assert await ws_client(count, f"wss://localhost:{ports[True]}/ws/", ctx) == expected
    assert await ws_client(count, f"ws://127.0.0.1:{ports[False]}/ws/", None) == expected
    h2_ctx = ssl.create_default_context(cafile=str(tmp_path / "tls" / "cert.pem"))
    h2_ctx.set_alpn_protocols(["h2"])
    async with open_h2_client("127.0.0.1", ports[True], ssl_context=h2_ctx) as client:
        status, _, page = await client.get("/count.html")
        assert status == 200
        assert b"wss://" in page
        ws = await client.websocket("/ws/")
        await ws.send_text("1\n")
        assert await ws.receive_message() == "1\n"
        await ws.close()


async def test_requests_on_tls_have_scheme_https(nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA) -> None:
    # A CGI script shows what the request said about itself, on both protocols.
    www = make_docroot(tmp_path)
    route = {"path": "/cgi/", "handler": "cgi", "assign": {".py": sys.executable}}
    settings = {"document-root": str(www), "tls": write_cert(ca, tmp_path)}
    server = await start_server(nursery, {"server": settings, "route": [route]})
    async with open_h2_client("127.0.0.1", server.port, ssl_context=client_ssl_context(ca)) as client:
        status, _, body = await client.get("/cgi/env.py")
    assert status == 200
    env = json.loads(body)["environ"]
    assert (env["REQUEST_SCHEME"], env.get("HTTPS")) == ("https", "on")
    assert env["REQUEST_METHOD"] == "GET"
    reply, _ = await https_get_h1(server.port, h1_context(ca), "/cgi/env.py")
    parser = h11.Connection(h11.CLIENT)
    parser.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    parser.receive_data(reply)
    body = b""
    while not isinstance(event := parser.next_event(), h11.EndOfMessage):
        if isinstance(event, h11.Data):
            body += event.data
    env = json.loads(body)["environ"]
    assert (env["REQUEST_SCHEME"], env.get("HTTPS"), env["SERVER_PROTOCOL"]) == ("https", "on", "HTTP/1.1")
