"""Issue 12, defect 2: a proxy route forwards the target it routed on, not the raw one.

Routes match the normalised path, so ``/admin/..%2fproxy/x`` takes the
``/proxy/`` route; the backend must then see ``/proxy/x`` (``proxy-target =
"normalized"``, the default), or the client gets a 400 and the backend is
never contacted (``"reject"``).  ``"raw"`` keeps the exact bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

import wstrio
from tests.helpers import RawClients, serve_tcp_backend, start_server

# Targets whose normalised path is /proxy/x, though the raw bytes say otherwise.
SNEAKY = [
    b"/admin/..%2fproxy/x",
    b"/admin/%2e%2e/proxy/x",
    b"/admin%2f..%2fproxy/x",
    b"/admin/../proxy/x",
    b"//proxy/x",
]


class Backend:
    """A backend that records each request line and answers 200."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    async def handle(self, stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = await stream.receive_some(65536)
            if not data:
                return
            head += data
        self.lines.append(head.split(b"\r\n", 1)[0])
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


async def proxy_server(nursery: trio.Nursery, backend: Backend, **route: Any) -> wstrio.Server:
    port = await serve_tcp_backend(nursery, backend.handle)
    return await start_server(
        nursery,
        {
            "route": [
                {"path": "/proxy/", "handler": "proxy", "backend": [{"host": "127.0.0.1", "port": port}], **route},
            ]
        },
    )


async def get(server: wstrio.Server, target: bytes) -> int:
    clients = RawClients()
    try:
        client = await clients.tcp(server.port)
        reply = await client.request(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        return reply.status
    finally:
        await clients.aclose()


@pytest.mark.parametrize("target", SNEAKY)
async def test_default_forwards_the_normalised_target(nursery: trio.Nursery, target: bytes) -> None:
    backend = Backend()
    server = await proxy_server(nursery, backend)
    assert await get(server, target) == 200
    assert await get(server, target + b"?a=%2F..&b") == 200
    assert backend.lines == [b"GET /proxy/x HTTP/1.1", b"GET /proxy/x?a=%2F..&b HTTP/1.1"]


async def test_normalised_target_is_re_encoded(nursery: trio.Nursery) -> None:
    backend = Backend()
    server = await proxy_server(nursery, backend, **{"proxy-target": "normalized"})
    assert await get(server, b"/proxy/a%20b/%3F%23/%25/./%41") == 200
    assert backend.lines == [b"GET /proxy/a%20b/%3F%23/%25/A HTTP/1.1"]


@pytest.mark.parametrize("target", SNEAKY)
async def test_reject_answers_400_and_never_contacts_the_backend(nursery: trio.Nursery, target: bytes) -> None:
    backend = Backend()
    server = await proxy_server(nursery, backend, **{"proxy-target": "reject"})
    assert await get(server, target) == 400
    assert backend.lines == []
    # A target that normalisation leaves alone goes on byte for byte.
    assert await get(server, b"/proxy/a%20b?q=/../") == 200
    assert await get(server, b"/proxy/a%2Fb") == 200
    assert await get(server, b"/proxy/a/./b") == 400
    assert backend.lines == [b"GET /proxy/a%20b?q=/../ HTTP/1.1", b"GET /proxy/a%2Fb HTTP/1.1"]


@pytest.mark.parametrize("target", SNEAKY)
async def test_raw_forwards_the_target_as_received(nursery: trio.Nursery, target: bytes) -> None:
    backend = Backend()
    server = await proxy_server(nursery, backend, **{"proxy-target": "raw"})
    assert await get(server, target) == 200
    assert backend.lines == [b"GET " + target + b" HTTP/1.1"]


def test_bad_value_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    route = '[[route]]\npath = "/proxy/"\nhandler = "{handler}"\nproxy-target = "{value}"\n'
    backend = '[[route.backend]]\nhost = "127.0.0.1"\nport = 1\n'
    path.write_text(route.format(handler="proxy", value="decoded") + backend)
    with pytest.raises(wstrio.ConfigError) as info:
        wstrio.load_config(path)
    assert info.value.path == "route[0].proxy-target"
    assert "gw.toml: route[0].proxy-target: must be one of" in str(info.value)
    path.write_text(route.format(handler="wstunnel", value="raw") + backend)
    with pytest.raises(wstrio.ConfigError) as info:
        wstrio.load_config(path)
    assert "gw.toml: route[0].proxy-target: only applies to proxy routes" in str(info.value)
    bad = wstrio.Route(handler="proxy", path="/", backends=(wstrio.Backend(host="h", port=1),), proxy_target="x")  # type: ignore[arg-type]
    with pytest.raises(wstrio.ConfigError) as info:
        wstrio.ServerConfig(routes=(bad,))
    assert info.value.path == "route[0].proxy-target"
