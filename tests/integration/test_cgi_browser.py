"""The seed's ``ws_echo.html`` and ``ws_echo.py`` in headless Chromium, through wstrio's CGI.

The page is ``examples/cgi/www/ws_echo_anyport.html``: the seed's page with
its one WebSocket URL line changed to keep the port (the seed's page dials
port 80).  The test types a message into the page's form, submits it, and
reads what the page wrote into ``#output``, as a person would.

What Chromium does with the seed's script: the handshake succeeds and the
socket opens, but the first echo comes back *masked*, and Chromium fails the
connection ("A server must not mask any frames that it sends to the
client.") and closes it with 1006; nothing reaches ``#output``.  With the
two protocol errors of the seed's script fixed (no masking, a real close
code) the echo appears.  wstrio passes the bytes through unchanged either
way (see ``test_cgi.py`` for the byte-level view).
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio

import wstrio
from tests.helpers import PROCESS_TIMEOUT, prepare_examples, start_server, ws_client, ws_connect
from tests.integration.conftest import Chromium
from tests.integration.gateway_support import EXAMPLES, SEED_WS_ECHO_HTML, fixed_ws_echo_source

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ANYPORT_HTML = EXAMPLES / "cgi" / "www" / "ws_echo_anyport.html"
SEED_URL_LINE = '        var host = "ws://" + window.location.hostname + "/ws/ws_echo.py";'


def test_anyport_page_differs_from_the_seed_only_in_the_url() -> None:
    seed = SEED_WS_ECHO_HTML.read_text().splitlines()
    ours = ANYPORT_HTML.read_text().splitlines()
    assert len(seed) == len(ours)
    changed = [(a, b) for a, b in zip(seed, ours, strict=True) if a != b]
    assert len(changed) == 1
    assert changed[0][0] == SEED_URL_LINE
    assert "window.location.host +" in changed[0][1]


def _browse(devtools_url: str, url: str, message: str) -> dict[str, Any]:
    """Open the page, wait for the socket to open, send ``message`` with the form, watch what happens."""
    with ws_connect(devtools_url) as ws:
        next_id = 0
        events: list[dict[str, Any]] = []

        def call(method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
            nonlocal next_id
            next_id += 1
            request: dict[str, Any] = {"id": next_id, "method": method, "params": params or {}}
            if session is not None:
                request["sessionId"] = session
            ws.send(json.dumps(request))
            while True:
                reply = json.loads(ws.recv(timeout=PROCESS_TIMEOUT))
                if reply.get("id") == next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    result: dict[str, Any] = reply.get("result", {})
                    return result
                events.append(reply)

        def evaluate(expression: str, session: str) -> Any:
            result = call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
            return result.get("result", {}).get("value")

        target = call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        call("Runtime.enable", session=session)
        call("Log.enable", session=session)
        call("Page.navigate", {"url": url}, session)
        state = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = evaluate("typeof s === 'undefined' ? null : s.readyState", session)
            if state in (1, 3):  # OPEN, CLOSED
                break
            time.sleep(0.05)  # the page's own WebSocket is what we wait for
        opened = state == 1
        if opened:
            evaluate("s.addEventListener('close', (e) => { window.closeCode = e.code; }); true", session)
            evaluate(
                f"document.getElementById('message').value = {json.dumps(message)};"
                "document.getElementById('form').requestSubmit(); true",
                session,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                output = evaluate("document.getElementById('output').innerText", session)
                state = evaluate("s.readyState", session)
                if message in output or state == 3:
                    break
                time.sleep(0.05)
            time.sleep(0.2)  # let late console messages arrive
        output = evaluate("document.getElementById('output').innerText", session)
        close_code = evaluate("window.closeCode ?? null", session)
        call("Target.closeTarget", {"targetId": target})
    console = []
    for event in events:
        params = event.get("params", {})
        if event.get("method") == "Runtime.consoleAPICalled":
            console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif event.get("method") == "Log.entryAdded":
            console.append(params.get("entry", {}).get("text", ""))
    return {"opened": opened, "state": state, "output": output, "console": console, "close_code": close_code}


@pytest.fixture
def www(tmp_path: Path) -> Path:
    www = tmp_path / "www"
    (www / "ws").mkdir(parents=True)
    shutil.copyfile(ANYPORT_HTML, www / "ws_echo.html")
    fixed = ANYPORT_HTML.read_text().replace("/ws/ws_echo.py", "/ws/ws_echo_fixed.py")
    (www / "ws_echo_fixed.html").write_text(fixed)
    shutil.copyfile(EXAMPLES / "cgi" / "www" / "ws" / "ws_echo.py", www / "ws" / "ws_echo.py")
    (www / "ws" / "ws_echo_fixed.py").write_text(fixed_ws_echo_source())
    for script in (www / "ws").iterdir():
        script.chmod(0o755)
    return www


def _config(www: Path) -> dict[str, Any]:
    # The seed: $HTTP["url"] =^ "/ws/" { cgi.assign = ("" => ""); cgi.upgrade = 1 }
    route = {"path": "/ws/", "handler": "cgi", "assign": {"": ""}, "upgrade": True}
    return {"server": {"document-root": str(www)}, "route": [route]}


async def test_seed_ws_echo_in_chromium(nursery: trio.Nursery, chromium: Chromium, www: Path) -> None:
    server = await start_server(nursery, _config(www))
    seen = await ws_client(_browse, chromium.devtools_url, server.url("/ws_echo.html"), "hello chromium")
    # The handshake through wstrio works: the page's socket opens ...
    assert seen["opened"], seen
    assert "Socket opened." in seen["console"]
    # ... and then Chromium refuses the seed's masked echo and closes.
    assert "hello chromium" not in seen["output"]
    assert (seen["state"], seen["close_code"]) == (3, 1006), seen  # 1006: failed, no closing handshake
    assert any("must not mask any frames" in line for line in seen["console"]), seen["console"]
    assert "Socket closed." in seen["console"]


async def test_fixed_ws_echo_in_chromium(nursery: trio.Nursery, chromium: Chromium, www: Path) -> None:
    server = await start_server(nursery, _config(www))
    seen = await ws_client(_browse, chromium.devtools_url, server.url("/ws_echo_fixed.html"), "hello chromium")
    assert seen["opened"], seen
    assert seen["output"] == "hello chromium", seen
    assert seen["state"] == 1, seen


def _example(tmp_path: Path, name: str) -> wstrio.ServerConfig:
    """examples/<name>/wstrio.toml as it is, copied with the examples, on port 0."""
    copy = prepare_examples(tmp_path)
    toml = copy / name / "wstrio.toml"
    text = toml.read_text()
    assert 'listen = ["127.0.0.1:8080"]' in text, "the example's listen line changed; update this test"
    toml.write_text(text.replace('listen = ["127.0.0.1:8080"]', 'listen = ["127.0.0.1:0"]'))
    return wstrio.load_config(toml)


def test_the_examples_fixed_script_is_the_seeds_with_two_fixes() -> None:
    shipped = EXAMPLES / "cgi" / "www" / "ws" / "ws_echo_fixed.py"
    assert shipped.read_text() == fixed_ws_echo_source()
    assert shipped.stat().st_mode & 0o111


@pytest.mark.parametrize("name", ["cgi", "scgi", "fastcgi"])
async def test_each_cgi_example_echoes_in_chromium(
    nursery: trio.Nursery, chromium: Chromium, tmp_path: Path, name: str
) -> None:
    server = await start_server(nursery, _example(tmp_path, name))
    index = await ws_client(_fetch, server.url("/"))
    assert 'href="echo.html"' in index
    seen = await ws_client(_browse, chromium.devtools_url, server.url("/echo.html"), f"hello {name}")
    assert seen["opened"], seen
    assert seen["output"] == f"hello {name}", seen
    assert seen["state"] == 1, seen


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=PROCESS_TIMEOUT) as response:
        body: bytes = response.read()
    return body.decode()
