"""Client addresses behind a load balancer: the PROXY protocol and forwarded-trust (issue 15, item 4).

A real server; the "load balancer" is a raw client that writes the header
HAProxy would write; the JSON access log and a CGI script's ``REMOTE_ADDR``
show which client wstrio believes it is talking to.
"""

from __future__ import annotations

import ipaddress
import json
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import wstrio
from tests.helpers import (
    OP_BINARY,
    RawClients,
    client_frame,
    handshake_request,
    make_config,
    serve_tcp_backend,
    start_server,
)
from wstrio._sansio.proxyproto import V2_SIGNATURE, encode_header

ENV_SCRIPT = """\
import os, sys
body = ("%s %s" % (os.environ["REMOTE_ADDR"], os.environ["REMOTE_PORT"])).encode()
sys.stdout.write("Content-Type: text/plain\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body))
sys.stdout.flush()
os.write(1, body)
"""

GET = b"GET /cgi/env.py HTTP/1.1\r\nHost: a\r\n\r\n"


def v2_tcp4(source: str, sport: int, command: int = 1) -> bytes:
    body = ipaddress.IPv4Address(source).packed + ipaddress.IPv4Address("192.0.2.1").packed
    body += struct.pack("!HH", sport, 443)
    return V2_SIGNATURE + bytes([0x20 | command, 0x11]) + struct.pack("!H", len(body)) + body


def v2_tcp6(source: str, sport: int) -> bytes:
    body = ipaddress.IPv6Address(source).packed + ipaddress.IPv6Address("2001:db8::2").packed
    body += struct.pack("!HH", sport, 443)
    return V2_SIGNATURE + b"\x21\x21" + struct.pack("!H", len(body)) + body


async def _server(nursery: trio.Nursery, tmp_path: Path, **server: Any) -> tuple[wstrio.Server, Path]:
    www = tmp_path / "www"
    (www / "cgi").mkdir(parents=True)
    (www / "cgi" / "env.py").write_text(ENV_SCRIPT)
    log = tmp_path / "access.jsonl"
    config: dict[str, Any] = {
        "server": {
            "document-root": str(www),
            "access-log": str(log),
            "access-log-format": "json",
            **server,
        },
        "route": [{"path": "/cgi/", "handler": "cgi", "assign": {".py": sys.executable}}],
    }
    return await start_server(nursery, config), log


def _proxied(**server: Any) -> dict[str, Any]:
    return {"listen": [{"address": "127.0.0.1:0", "proxy-protocol": True}], **server}


async def _last_line(log: Path, count: int) -> dict[str, Any]:
    file = trio.Path(log)
    with trio.fail_after(30):
        while True:
            lines = (await file.read_text()).splitlines() if await file.exists() else []
            if len(lines) >= count:
                record: dict[str, Any] = json.loads(lines[count - 1])
                return record
            await trio.sleep(0.02)


@pytest.mark.parametrize(
    ("header", "client"),
    [
        (b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n", ("203.0.113.7", 56324)),
        (v2_tcp4("198.51.100.20", 40000), ("198.51.100.20", 40000)),
        (v2_tcp6("2001:db8::1", 1234), ("2001:db8::1", 1234)),
    ],
    ids=["v1", "v2-tcp4", "v2-tcp6"],
)
async def test_the_proxy_header_names_the_client(
    nursery: trio.Nursery, tmp_path: Path, raw: RawClients, header: bytes, client: tuple[str, int]
) -> None:
    server, log = await _server(nursery, tmp_path, **_proxied(**{"trusted-proxies": ["127.0.0.1"]}))
    conn = await raw.tcp(server.port)
    # The header and the request in one write, as a load balancer sends them.
    response = await conn.request(header + GET)
    assert response.status == 200
    assert response.body == f"{client[0]} {client[1]}".encode(), "CGI REMOTE_ADDR/REMOTE_PORT"
    record = await _last_line(log, 1)
    assert (record["client"], record["client_port"]) == client


async def test_a_header_in_pieces_and_a_local_health_check(
    nursery: trio.Nursery, tmp_path: Path, raw: RawClients
) -> None:
    server, _log = await _server(nursery, tmp_path, **_proxied(**{"trusted-proxies": ["127.0.0.0/8"]}))
    conn = await raw.tcp(server.port)
    for piece in (b"PROXY TC", b"P4 203.0.113.9 192.0.2.1 5", b"55 443\r", b"\n"):
        await conn.send(piece)
        await trio.sleep(0.01)
    assert (await conn.request(GET)).body == b"203.0.113.9 555"
    # LOCAL: the proxy's own connection; its address stays.
    local = await raw.tcp(server.port)
    assert (await local.request(v2_tcp4("0.0.0.0", 0, command=0) + GET)).body.startswith(b"127.0.0.1 ")


@pytest.mark.parametrize(
    ("first", "why"),
    [
        (GET, "a plain request on a proxy-protocol listener"),
        (b"PROXY TCP4 203.0.113.7 192.0.2.1 56324\r\n" + GET, "a malformed header"),
    ],
)
async def test_no_or_a_bad_header_closes_the_connection(
    nursery: trio.Nursery, tmp_path: Path, raw: RawClients, first: bytes, why: str
) -> None:
    server, _log = await _server(nursery, tmp_path, **_proxied(**{"trusted-proxies": ["127.0.0.1"]}))
    conn = await raw.tcp(server.port)
    await conn.send(first)
    assert await conn.receive_within(10) == b"", why


async def test_a_peer_not_in_trusted_proxies_is_closed(nursery: trio.Nursery, tmp_path: Path, raw: RawClients) -> None:
    server, _log = await _server(nursery, tmp_path, **_proxied(**{"trusted-proxies": ["10.0.0.0/8"]}))
    conn = await raw.tcp(server.port)
    await conn.send(b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n" + GET)
    assert await conn.receive_within(10) == b"", "a forged header from an untrusted peer is not believed"


async def test_forwarded_for_from_a_trusted_proxy(nursery: trio.Nursery, tmp_path: Path, raw: RawClients) -> None:
    server, log = await _server(nursery, tmp_path, **{"forwarded-trust": ["127.0.0.1"]})
    conn = await raw.tcp(server.port)
    request = b"GET /cgi/env.py HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6, 198.51.100.7\r\n\r\n"
    assert (await conn.request(request)).body == b"198.51.100.7 0"
    assert (await _last_line(log, 1))["client"] == "198.51.100.7"


async def test_forwarded_for_from_anyone_else_is_ignored(
    nursery: trio.Nursery, tmp_path: Path, raw: RawClients
) -> None:
    server, _log = await _server(nursery, tmp_path, **{"forwarded-trust": ["10.0.0.0/8"]})
    conn = await raw.tcp(server.port)
    request = b"GET /cgi/env.py HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n"
    assert (await conn.request(request)).body.startswith(b"127.0.0.1 ")


def test_proxy_protocol_needs_trusted_proxies() -> None:
    with pytest.raises(wstrio.ConfigError, match=r"server\.listen\[0\]\.proxy-protocol: needs server\.trusted-proxies"):
        make_config({"server": {"listen": [{"address": "127.0.0.1:0", "proxy-protocol": True}]}})


async def test_a_proxy_route_appends_the_hop_not_the_client_again(
    nursery: trio.Nursery, tmp_path: Path, raw: RawClients
) -> None:
    seen: list[bytes] = []

    async def backend(stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(4096)
        seen.append(head)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    port = await serve_tcp_backend(nursery, backend)
    config = {
        "server": {"forwarded-trust": ["127.0.0.1"]},
        "route": [{"path": "/p/", "handler": "proxy", "backend": [{"host": "127.0.0.1", "port": port}]}],
    }
    server = await start_server(nursery, config)
    conn = await raw.tcp(server.port)
    request = b"GET /p/x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n"
    assert (await conn.request(request)).status == 200
    (head,) = seen
    assert b"\r\nx-forwarded-for: 198.51.100.7, 127.0.0.1\r\n" in head.lower()


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_a_backend_learns_the_client_from_send_proxy_protocol(
    nursery: trio.Nursery, raw: RawClients, version: str
) -> None:
    got: list[bytes] = []
    arrived = trio.Event()

    async def backend(stream: trio.SocketStream) -> None:
        data = b""
        while not data.endswith(b"hello"):
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            data += chunk
        got.append(data)
        arrived.set()

    port = await serve_tcp_backend(nursery, backend)
    config = {
        "server": {
            "listen": [{"address": "127.0.0.1:0", "proxy-protocol": True}],
            "trusted-proxies": ["127.0.0.1"],
            "shutdown-timeout": 0.25,
        },
        "route": [
            {
                "path": "/ws/",
                "handler": "wstunnel",
                "frame-type": "binary",
                "backend": [{"host": "127.0.0.1", "port": port, "send-proxy-protocol": version}],
            }
        ],
    }
    server = await start_server(nursery, config)
    conn = await raw.tcp(server.port)
    # In: a balancer says the client is 203.0.113.7:56324, connected to 192.0.2.1:443.
    await conn.send(b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n" + handshake_request("/ws/"))
    assert (await conn.read_head()).status == 101
    await conn.send(client_frame(OP_BINARY, b"hello"))
    with trio.fail_after(30):
        await arrived.wait()
    (data,) = got
    # Out: the backend hears the same, before the tunnel's first byte.
    expected = encode_header(1 if version == "v1" else 2, ("203.0.113.7", 56324), ("192.0.2.1", 443))
    assert data == expected + b"hello"
    await conn.read_frames_until_close()  # the backend has gone: CLOSE 1001, answered


def test_send_proxy_protocol_values() -> None:
    route = {"path": "/ws/", "handler": "wstunnel", "backend": [{"host": "h", "port": 1, "send-proxy-protocol": "v3"}]}
    with pytest.raises(wstrio.ConfigError, match=r"route\[0\]\.backend\[0\]\.send-proxy-protocol"):
        make_config({"route": [route]})
