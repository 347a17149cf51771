"""examples/embed.py as a user runs it: a separate process, a real Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import trio
from websockets.exceptions import ConnectionClosed

from tests.helpers import EXAMPLES, PROCESS_TIMEOUT, ws_client, ws_connect

ROOT = Path(__file__).resolve().parents[2]
EMBED = EXAMPLES / "embed.py"


def test_the_docs_show_the_whole_example() -> None:
    source = EMBED.read_text()
    body = source[source.index("import signal") :]
    docs = (ROOT / "docs" / "embedding.md").read_text()
    snippet = docs[docs.index("```python\n") + len("```python\n") :]
    snippet = snippet[: snippet.index("```\n")]
    assert snippet == body


async def test_ctrl_c_closes_the_websockets_and_exits_cleanly(tmp_path: Path) -> None:
    # The example as it is, but on a free port (8765 may be taken here).
    copy = tmp_path / "embed.py"
    copy.write_text(EMBED.read_text().replace('"127.0.0.1", 8765', '"127.0.0.1", 0'))
    process = await trio.lowlevel.open_process(
        [sys.executable, str(copy)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        line = b""
        with trio.fail_after(PROCESS_TIMEOUT):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                assert chunk, "the example exited before listening"
                line += chunk
        found = re.search(r"ws://127\.0\.0\.1:(\d+)/shout/", line.decode())
        assert found, line
        url = found.group(0)

        def client() -> tuple[str, int | None]:
            with ws_connect(url) as ws:
                ws.send("hello\n")
                echoed = str(ws.recv(timeout=10))
                process.send_signal(signal.SIGINT)  # Ctrl-C in the terminal
                try:
                    ws.recv(timeout=10)
                except ConnectionClosed as exc:
                    return echoed, exc.rcvd.code if exc.rcvd else None
                return echoed, None

        echoed, code = await ws_client(client)
        assert echoed == "HELLO\n"
        assert code == 1001
        with trio.fail_after(PROCESS_TIMEOUT):
            status = await process.wait()
        stderr = b""
        while chunk := await process.stderr.receive_some(65536):
            stderr += chunk
        assert status == 0, stderr
        assert b"Traceback" not in stderr
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
