"""The seed's count.html in headless Chromium, served and tunnelled by wstrio.

This is the quick start of the README, checked by a real browser: the page
opens ``ws://host/ws/``, sends 1..5, and shows each echo from ``echo.pl``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import trio

import wstrio
from tests.helpers import EXAMPLES, missing_tool, start_server
from tests.integration.conftest import Chromium

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(missing_tool("perl"), reason="echo.pl needs perl"),
]


def count_example(tmp_path: Path) -> wstrio.ServerConfig:
    """The example's own wstrio.toml, copied with its files, on port 0."""
    copy = tmp_path / "count"
    shutil.copytree(EXAMPLES / "count", copy, ignore=shutil.ignore_patterns("*.sock", "*.sock-*"))
    toml = copy / "wstrio.toml"
    text = toml.read_text()
    assert 'listen = ["127.0.0.1:8080"]' in text, "the example's listen line changed; update this test"
    toml.write_text(text.replace('listen = ["127.0.0.1:8080"]', 'listen = ["127.0.0.1:0"]'))
    return wstrio.load_config(toml)


async def test_count_html_counts_to_five(nursery: trio.Nursery, tmp_path: Path, chromium: Chromium) -> None:
    server = await start_server(nursery, count_example(tmp_path))
    text = await chromium.page_text(server.url("/count.html"), until="RECV: 5")
    assert re.findall(r"SEND: (\d+)", text) == ["1", "2", "3", "4", "5"], text
    assert re.findall(r"RECV: (\d+)", text) == ["1", "2", "3", "4", "5"], text
    assert text.index("CONNECT") < text.index("RECV: 1")
    assert "DISCONNECT" not in text
