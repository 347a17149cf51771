"""Fixtures of the integration tier: real sockets, processes, a browser.

* Every async test here runs under a deadline (:data:`TEST_DEADLINE`, or
  :data:`SLOW_TEST_DEADLINE` for ``@pytest.mark.slow``), so a server that
  never answers fails one test instead of hanging the suite.
* ``hub_switch`` (the hub on, then off: a module uses it with
  ``pytestmark = pytest.mark.usefixtures("hub_switch")``) and ``handbacks``
  (every hand-back of every hub, in order: a spy on the hub's one entry).
* ``chromium``: a headless Chromium, driven over the DevTools protocol with
  the ``websockets`` sync client (skips when ``/usr/bin/chromium`` is missing).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from tests.helpers import PROCESS_TIMEOUT, RawClients, missing_tool, ws_client, ws_connect

T = TypeVar("T")

_SCALE = float(os.environ.get("WSTRIO_TEST_DEADLINE_SCALE", "1"))  # for slow machines
TEST_DEADLINE = 60.0 * _SCALE
SLOW_TEST_DEADLINE = 240.0 * _SCALE
HERE = Path(__file__).resolve().parent

CHROMIUM = Path(os.environ.get("WSTRIO_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
    "--remote-debugging-address=127.0.0.1",
)


def _run_with_deadline(seconds: float) -> Callable[..., Any]:
    """A ``trio.run`` for pytest-trio that fails the test after ``seconds``."""

    def run(fn: Callable[[], Awaitable[T]], *, clock: trio.abc.Clock | None = None, **kwargs: Any) -> T:
        async def guarded() -> T:
            if clock is not None:  # a MockClock's time is not wall time
                return await fn()
            with trio.fail_after(seconds):
                return await fn()

        return trio.run(guarded, clock=clock, **kwargs)

    return run


@pytest.hookimpl(trylast=True)  # after pytest-trio's own marking in trio mode
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function) or HERE not in Path(str(item.path)).parents:
            continue
        if not inspect.iscoroutinefunction(item.obj):
            continue  # a sync test
        limit = SLOW_TEST_DEADLINE if item.get_closest_marker("slow") else TEST_DEADLINE
        # pytest-trio uses the first ``trio`` marker that names a runner.
        item.add_marker(pytest.mark.trio(run=_run_with_deadline(limit)), append=False)


@pytest.fixture
async def raw(nursery: trio.Nursery) -> AsyncIterator[RawClients]:
    """Raw byte-level clients (``await raw.tcp(port)``), closed after the test.

    It depends on ``nursery`` so that the clients close *before* the servers
    in that nursery are cancelled: a server shutting down waits (up to
    ``shutdown-timeout``) for the CLOSE of every client still connected.
    """
    del nursery
    clients = RawClients()
    try:
        yield clients
    finally:
        with trio.CancelScope(shield=True):
            await clients.aclose()


# --------------------------------------------------------------------------
# Chromium
# --------------------------------------------------------------------------


class _Cdp:
    """A minimal, blocking DevTools-protocol client (one browser connection)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv(timeout=PROCESS_TIMEOUT))
            if reply.get("id") != self.next_id:
                continue  # an event
            if "error" in reply:
                msg = f"{method}: {reply['error']}"
                raise RuntimeError(msg)
            result: dict[str, Any] = reply.get("result", {})
            return result


def _page_text_until(
    devtools_url: str, url: str, needle: str, deadline: float, actions: tuple[tuple[str, str], ...] = ()
) -> str:
    """Open ``url`` in a new tab; poll its text until it contains ``needle`` or time is up.

    ``actions``: ``(text, script)`` pairs: once the page shows ``text``, ``script`` runs in it (once, in order).
    """
    with ws_connect(devtools_url) as ws:
        cdp = _Cdp(ws)
        target = cdp.call("Target.createTarget", {"url": url})["targetId"]
        session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        text = ""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            result = cdp.call(
                "Runtime.evaluate",
                {"expression": "document.body ? document.body.innerText : ''", "returnByValue": True},
                session,
            )
            text = str(result.get("result", {}).get("value", ""))
            if actions and actions[0][0] in text:
                cdp.call("Runtime.evaluate", {"expression": actions[0][1]}, session)
                actions = actions[1:]
                continue
            if needle in text and not actions:
                break
            time.sleep(0.1)  # the page's own WebSocket is what we wait for
        cdp.call("Target.closeTarget", {"targetId": target})
        return text


class Chromium:
    """A running headless Chromium."""

    def __init__(self, devtools_url: str, log: list[str]) -> None:
        self.devtools_url = devtools_url
        self.log = log

    async def page_text(
        self, url: str, *, until: str, deadline: float = 30.0, actions: tuple[tuple[str, str], ...] = ()
    ) -> str:
        """Load ``url`` and return the page's text once it contains ``until`` (or after ``deadline`` s).

        ``actions``: ``(text, script)``: when the page shows ``text``, run ``script`` in it (typing, clicking).
        """
        return await ws_client(_page_text_until, self.devtools_url, url, until, deadline, actions)


@pytest.fixture
def chromium_path() -> Path:
    if missing_tool(str(CHROMIUM)):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
async def chromium(chromium_path: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Chromium]:
    """A headless Chromium with a fresh profile, stopped after the test.

    Its temporary files (the profile's singleton socket directory) go to the
    test's own temporary directory, not /tmp, so a test run leaves nothing.
    """
    profile = tmp_path_factory.mktemp("chromium-profile")
    scratch = tmp_path_factory.mktemp("chromium-tmp")
    process = await trio.lowlevel.open_process(
        [str(chromium_path), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        env={**os.environ, "TMPDIR": str(scratch)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    log: list[str] = []
    found = trio.Event()
    url: list[str] = []

    async def read_stderr() -> None:
        assert process.stderr is not None
        pending = b""
        while chunk := await process.stderr.receive_some(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                log.append(line)
                if not url and (m := re.search(r"DevTools listening on (ws://\S+)", line)):
                    url.append(m.group(1))
                    found.set()
        found.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_stderr)
            with trio.fail_after(PROCESS_TIMEOUT):
                await found.wait()
            if not url:
                pytest.fail("chromium exited before DevTools listened:\n" + "\n".join(log))
            yield Chromium(url[0], log)
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            _kill_group(process.pid, signal.SIGTERM)
            with trio.move_on_after(10):
                await process.wait()
            _kill_group(process.pid, signal.SIGKILL)
            await process.wait()
        shutil.rmtree(profile, ignore_errors=True)


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


@pytest.fixture(params=[True, False], ids=["hub", "no-hub"])
def hub_switch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """The hub on, then off (its private switch), for every server a test starts."""
    from wstrio._io.streams.fastpath import hub as hub_module

    enabled: bool = request.param
    monkeypatch.setattr(hub_module, "ENABLED", enabled)
    return enabled


@pytest.fixture
def handbacks(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every hand-back of every hub, in order (a spy on the hub's one entry, ``Hub.enter``)."""
    from wstrio._io.streams.fastpath.handback import HandBack
    from wstrio._io.streams.fastpath.hub import Handler, Hub

    seen: list[HandBack] = []
    enter = Hub.enter

    async def spy(self: Hub, client_fd: int, backend_fd: int, on_client: Handler, on_backend: Handler) -> HandBack:
        handback = await enter(self, client_fd, backend_fd, on_client, on_backend)
        seen.append(handback)
        return handback

    monkeypatch.setattr(Hub, "enter", spy)
    return seen
