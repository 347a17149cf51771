"""The front door: header fields wstrio refuses rather than passes on.

Issue 12, defect 5: an invalid ``Host`` (RFC 9112 section 3.2), a header
value with a control byte, and a duplicated ``Sec-WebSocket-Key`` (RFC 6455
section 11.3.1) are 400, on static, proxy and wstunnel routes alike, and
never reach a backend.  Bare LF line endings are accepted (RFC 9112 section
2.2); an obs-fold is replaced by one space before the field is interpreted
or forwarded (section 5.2).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import wstrio
from tests.helpers import (
    WS_KEY,
    RawClients,
    echo_route,
    handshake_request,
    serve_echo_tcp,
    serve_recording_backend,
    start_server,
)

Heads = list[list[tuple[bytes, bytes]]]


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("index\n")
    return root


async def recording_backend(nursery: trio.Nursery, heads: Heads) -> int:
    """An HTTP backend that answers 200 ``ok`` and records each request's header fields."""
    return await serve_recording_backend(nursery, lambda request: heads.append(list(request.headers.raw_items())))


async def gateway(nursery: trio.Nursery, www: Path, heads: Heads) -> wstrio.Server:
    """Static files from ``www``; ``/proxy/`` to a recording backend; ``/ws/`` a wstunnel to an echo."""
    routes = [
        {
            "path": "/proxy/",
            "handler": "proxy",
            "backend": [{"host": "127.0.0.1", "port": await recording_backend(nursery, heads)}],
        },
        echo_route(await serve_echo_tcp(nursery), "/ws/"),
    ]
    return await start_server(nursery, {"server": {"document-root": str(www)}, "route": routes})


BAD_HOSTS = [
    b"a b/c@d",
    b"user@example.com",
    b"example.com/x",
    b"exa\x01mple.com",
    b"example.com\x7f",
    b"example.com:80x",
    b"example.com:80:81",
    b"[::1",
    b"[not-ipv6]:80",
    b"%zz.example",
    b'"example.com"',
]


@pytest.mark.parametrize("host", BAD_HOSTS)
@pytest.mark.parametrize("path", [b"/index.html", b"/proxy/a"])
async def test_invalid_host_is_400_and_never_forwarded(
    nursery: trio.Nursery, raw: RawClients, www: Path, host: bytes, path: bytes
) -> None:
    heads: Heads = []
    server = await gateway(nursery, www, heads)
    client = await raw.tcp(server.port)
    response = await client.request(b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert response.status == 400, response
    assert heads == []


@pytest.mark.parametrize("host", BAD_HOSTS)
async def test_invalid_host_on_a_handshake_is_400(
    nursery: trio.Nursery, raw: RawClients, www: Path, host: bytes
) -> None:
    server = await gateway(nursery, www, [])
    client = await raw.tcp(server.port)
    request = handshake_request(host="HOST").replace(b"Host: HOST", b"Host: " + host)
    response = await client.request(request)
    assert response.status == 400, response


@pytest.mark.parametrize(
    "host",
    [
        b"example.com",
        b"example.com:8080",
        b"127.0.0.1:80",
        b"[::1]:8080",
        b"[v1.x]",
        b"ex-a_m~p.l!e$&'()*+,;=",
        b"%41b",
    ],
)
async def test_valid_hosts_are_served_and_forwarded(
    nursery: trio.Nursery, raw: RawClients, www: Path, host: bytes
) -> None:
    heads: Heads = []
    server = await gateway(nursery, www, heads)
    client = await raw.tcp(server.port)
    response = await client.request(b"GET /index.html HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert response.status == 200, response
    response = await client.request(b"GET /proxy/a HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert response.status == 200, response
    assert (b"host", host) in heads[0]
    assert (b"x-forwarded-host", host) in heads[0]


@pytest.mark.parametrize(
    "head",
    [
        b"GET /index.html HTTP/1.1\r\n\r\n",  # HTTP/1.1 needs a Host
        b"GET /index.html HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /index.html HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
    ],
)
async def test_missing_or_repeated_host_is_400(nursery: trio.Nursery, raw: RawClients, www: Path, head: bytes) -> None:
    server = await gateway(nursery, www, [])
    client = await raw.tcp(server.port)
    response = await client.request(head)
    assert response.status == 400, response


async def test_http10_without_host_is_served(nursery: trio.Nursery, raw: RawClients, www: Path) -> None:
    server = await gateway(nursery, www, [])
    client = await raw.tcp(server.port)
    response = await client.request(b"GET /index.html HTTP/1.0\r\n\r\n")
    assert response.status == 200, response


@pytest.mark.parametrize("byte", [b"\x01", b"\x08", b"\x0e", b"\x1b", b"\x1f", b"\x7f"])
@pytest.mark.parametrize("path", [b"/index.html", b"/proxy/a"])
async def test_control_byte_in_a_header_value_is_400_and_never_forwarded(
    nursery: trio.Nursery, raw: RawClients, www: Path, byte: bytes, path: bytes
) -> None:
    heads: Heads = []
    server = await gateway(nursery, www, heads)
    client = await raw.tcp(server.port)
    response = await client.request(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nX-A: a" + byte + b"b\r\n\r\n")
    assert response.status == 400, response
    assert heads == []


async def test_control_byte_in_a_handshake_header_is_400(nursery: trio.Nursery, raw: RawClients, www: Path) -> None:
    server = await gateway(nursery, www, [])
    client = await raw.tcp(server.port)
    response = await client.request(handshake_request(headers=[("Origin", "http://x\x1b[2J")]))
    assert response.status == 400, response


async def test_tab_and_obs_text_in_a_header_value_are_forwarded(
    nursery: trio.Nursery, raw: RawClients, www: Path
) -> None:
    heads: Heads = []
    server = await gateway(nursery, www, heads)
    client = await raw.tcp(server.port)
    response = await client.request(b"GET /proxy/a HTTP/1.1\r\nHost: x\r\nX-A: a\tb\xe9\r\n\r\n")
    assert response.status == 200, response
    assert (b"x-a", b"a\tb\xe9") in heads[0]


@pytest.mark.parametrize("second", [WS_KEY, b"x3JJHMbDL1EzLkh9GBhXDw=="])
async def test_duplicated_websocket_key_is_400(
    nursery: trio.Nursery, raw: RawClients, www: Path, second: bytes
) -> None:
    server = await gateway(nursery, www, [])
    client = await raw.tcp(server.port)
    response = await client.request(handshake_request(headers=[("Sec-WebSocket-Key", second.decode())]))
    assert response.status == 400, response


async def test_a_single_websocket_key_still_switches(nursery: trio.Nursery, raw: RawClients, www: Path) -> None:
    server = await gateway(nursery, www, [])
    client = await raw.tcp(server.port)
    response = await client.ws_handshake()
    assert response.status == 101, response


async def test_bare_lf_line_endings_are_accepted(nursery: trio.Nursery, raw: RawClients, www: Path) -> None:
    heads: Heads = []
    server = await gateway(nursery, www, heads)
    client = await raw.tcp(server.port)
    response = await client.request(b"GET /index.html HTTP/1.1\nHost: x\n\n")
    assert response.status == 200, response
    response = await client.request(b"GET /proxy/a HTTP/1.1\nHost: x\nX-A: b\n\n")
    assert response.status == 200, response
    assert (b"x-a", b"b") in heads[0]


async def test_obs_fold_is_forwarded_as_one_space(nursery: trio.Nursery, raw: RawClients, www: Path) -> None:
    heads: Heads = []
    server = await gateway(nursery, www, heads)
    client = await raw.tcp(server.port)
    response = await client.request(b"GET /proxy/a HTTP/1.1\r\nHost: x\r\nX-A: a\r\n \t b\r\n\r\n")
    assert response.status == 200, response
    assert (b"x-a", b"a b") in heads[0]
