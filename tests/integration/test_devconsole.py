"""The development console (``devconsole = true``): in headless Chromium, and against hostile requests."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.helpers import RawClient, start_cli, start_server
from tests.integration.conftest import Chromium
from wstrio._sansio.devconsole import PAGE

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


async def get(port: int, target: str, *headers: str) -> tuple[int, dict[bytes, bytes], bytes]:
    client = await RawClient.tcp(port)
    try:
        head = "".join(f"{h}\r\n" for h in headers)
        response = await client.request(f"GET {target} HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
    finally:
        await client.aclose()
    return response.status, dict(response.headers), response.body


async def console_server(nursery: trio.Nursery, **server: object) -> int:
    route = {"path": "/ws/", "handler": "process", "command": ["cat"]}
    started = await start_server(nursery, {"server": {"devconsole": True, **server}, "route": [route]})
    return started.port


async def test_a_browser_gets_the_constant_page_whatever_it_asks(nursery: trio.Nursery) -> None:
    port = await console_server(nursery)
    hostile = (
        "/ws/%3Cscript%3Ealert(1)%3C/script%3E\"'><img src=x onerror=alert(1)>?q=</script><script>alert(2)</script>"
    )
    status, headers, body = await get(port, hostile.replace(" ", "%20"), f"Accept: {BROWSER}")
    assert status == 200
    assert body == PAGE  # nothing of the request is in it
    csp = headers[b"content-security-policy"].decode()
    assert "default-src 'none'" in csp
    assert "script-src 'sha256-" in csp
    assert "unsafe-inline" not in csp
    assert headers[b"x-content-type-options"] == b"nosniff"


async def test_not_for_other_clients_nor_other_requests(nursery: trio.Nursery) -> None:
    port = await console_server(nursery, **{"forwarded-trust": ["127.0.0.1"]})
    # A client that is not on loopback (behind a trusted proxy): the usual 426.
    status, _, _ = await get(port, "/ws/", f"Accept: {BROWSER}", "X-Forwarded-For: 203.0.113.5")
    assert status == 426
    # Not a browser asking for a page (curl): 426.
    status, _, _ = await get(port, "/ws/", "Accept: */*")
    assert status == 426
    # Not a WebSocket route: 404.
    status, _, _ = await get(port, "/elsewhere", f"Accept: {BROWSER}")
    assert status == 404


async def test_off_by_default(nursery: trio.Nursery) -> None:
    route = {"path": "/ws/", "handler": "process", "command": ["cat"]}
    server = await start_server(nursery, {"route": [route]})
    status, _, _ = await get(server.port, "/ws/", f"Accept: {BROWSER}")
    assert status == 426


@pytest.mark.browser
@pytest.mark.slow
async def test_typing_a_message_shows_the_echo(nursery: trio.Nursery, tmp_path: Path, chromium: Chromium) -> None:
    cli = await start_cli(nursery, "run", "--listen", "127.0.0.1:0", "--devconsole", "--", "cat", cwd=tmp_path)
    type_text = "document.getElementById('text').value = 'hello console'; document.getElementById('send').click();"
    type_hex = "document.getElementById('hex').value = '48 69'; document.getElementById('sendhex').click();"
    text = await chromium.page_text(
        f"http://127.0.0.1:{cli.port}/any/path?x=<b>",
        until="RECV Hi",
        actions=(("OPEN connected", type_text), ("RECV hello console", type_hex)),
    )
    assert "SEND hello console" in text, text
    assert "RECV hello console" in text, text
    assert "SEND binary 2 bytes: 48 69" in text, text
    assert "RECV Hi" in text, text
    assert "This page came over http/1.1" in text, text
    assert not [line for line in chromium.log if "Content Security Policy" in line], chromium.log
