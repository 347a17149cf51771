"""Headless Chromium over https:// and wss://, and what it does with HTTP/2.

The page is the seed's count.html with ``wss://`` instead of ``ws://``
(``tests/data/count-wss.html``); it counts 1..5 through a wstunnel route to
an echo backend.  The certificate is self-signed (trustme) and Chromium runs
with ``--ignore-certificate-errors``.

What the server saw is read from the access log, which names the protocol
of every request: ``"GET /count-wss.html HTTP/2"`` and, for the WebSocket,
``"CONNECT /ws/ HTTP/2"`` (RFC 8441) or ``"GET /ws/ HTTP/1.1"`` (an
HTTP/1.1 Upgrade on a connection of its own).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import trio
import trustme

import tests.integration.conftest as integration
from tests.helpers import echo_route, serve_echo_tcp, start_server
from tests.integration.conftest import Chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DATA = Path(__file__).resolve().parent.parent / "data"
ACCESS = re.compile(r'^(?P<peer>\S+) "(?P<method>\S+) (?P<target>\S+) HTTP/(?P<version>[\d.]+)" (?P<status>\S+)')


@pytest.fixture
def insecure_chromium_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """Add ``--ignore-certificate-errors`` to the shared ``chromium`` fixture (request it first).

    The fixture reads ``CHROMIUM_FLAGS`` when it starts the browser;
    monkeypatch puts it back afterwards.
    """
    monkeypatch.setattr(integration, "CHROMIUM_FLAGS", (*integration.CHROMIUM_FLAGS, "--ignore-certificate-errors"))


async def _serve_count_page(nursery: trio.Nursery, tmp_path: Path, *, http2: bool) -> int:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    port = await serve_echo_tcp(nursery)
    server = await start_server(
        nursery,
        {
            "server": {
                "document-root": str(DATA),
                "http2": http2,
                "tls": {"certificate": str(tmp_path / "cert.pem"), "private-key": str(tmp_path / "key.pem")},
            },
            "route": [echo_route(port)],
        },
    )
    return server.port


def _access(caplog: pytest.LogCaptureFixture) -> list[dict[str, str]]:
    out = []
    for record in caplog.records:
        if record.name == "wstrio.access" and (m := ACCESS.match(record.getMessage())):
            out.append(m.groupdict())
    return out


async def _websocket_line(caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    """The access-log entry of the /ws/ handshake (written when the WebSocket ends)."""
    with trio.fail_after(20):
        while True:
            for entry in _access(caplog):
                if entry["target"] == "/ws/":
                    return entry
            await trio.sleep(0.05)  # the log is the only signal


@pytest.mark.parametrize("http2", [True, False], ids=["h2-offered", "http1-only"])
async def test_count_page_over_https_and_wss(
    nursery: trio.Nursery,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    insecure_chromium_flags: None,
    chromium: Chromium,
    http2: bool,
) -> None:
    caplog.set_level(logging.INFO, "wstrio.access")
    port = await _serve_count_page(nursery, tmp_path, http2=http2)
    text = await chromium.page_text(f"https://localhost:{port}/count-wss.html", until="RECV: 5")
    for i in range(1, 6):
        assert f"SEND: {i}" in text
        assert f"RECV: {i}" in text
    page = next(e for e in _access(caplog) if e["target"] == "/count-wss.html")
    websocket = await _websocket_line(caplog)
    assert page["version"] == ("2" if http2 else "1.1")
    if not http2:
        assert (websocket["method"], websocket["version"], websocket["status"]) == ("GET", "1.1", "101")


async def test_chromium_opens_the_websocket_as_an_h2_stream(
    nursery: trio.Nursery,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    insecure_chromium_flags: None,
    chromium: Chromium,
) -> None:
    """Observed with Chromium 156: RFC 8441 on the page's own h2 connection.

    Chromium uses extended CONNECT only when it already has an HTTP/2 session
    to the origin whose SETTINGS allow it (ENABLE_CONNECT_PROTOCOL = 1); the
    page load made that session.  If a Chromium release changes this, this
    test says so (docs/tls-http2.md records the finding).
    """
    caplog.set_level(logging.INFO, "wstrio.access")
    port = await _serve_count_page(nursery, tmp_path, http2=True)
    text = await chromium.page_text(f"https://localhost:{port}/count-wss.html", until="RECV: 5")
    assert "RECV: 5" in text
    page = next(e for e in _access(caplog) if e["target"] == "/count-wss.html")
    websocket = await _websocket_line(caplog)
    assert (websocket["method"], websocket["version"], websocket["status"]) == ("CONNECT", "2", "200"), websocket
    assert websocket["peer"] == page["peer"], "the WebSocket should share the page's HTTP/2 connection"
