"""CGI scripts that outlive their answer hold nothing back (issue 13, defect 10).

A script that has answered and closed stdout but keeps running (ignoring
SIGTERM) delayed the client's next keep-alive request by about 4 s: the
request waited for its grace period, the SIGTERM grace and the SIGKILL.  A
silent script that ignores SIGTERM got its ``read-timeout`` 504 two seconds
late, for the same reason.  Now the answer goes first and the script is
stopped and reaped in the background, within a few seconds.

The checks need no clock: a script that ignores SIGTERM lives at least
``2 * STOP_GRACE`` seconds after its answer; before, the next response (or
the 504) could only come after it had been killed, now it comes while the
script is still alive, and the script is gone soon after.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from tests.helpers import RawClient, pid_alive, start_server, wait_pid_gone
from tests.integration.gateway_support import make_docroot

STRAGGLER = """\
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
body = str(os.getpid()).encode()
out = os.fdopen(1, "wb")
out.write(b"Content-Type: text/plain\\r\\nContent-Length: %d\\r\\n\\r\\n%s" % (len(body), body))
out.close()
time.sleep(120)
"""

pytestmark = pytest.mark.slow

SILENT = """\
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(os.path.join(os.environ["PID_DIR"], "silent.pid"), "w") as f:
    f.write(str(os.getpid()))
time.sleep(120)
"""


def _routes(www: Path, **options: object) -> dict[str, object]:
    route = {"path": "/cgi/", "handler": "cgi", "assign": {".py": sys.executable}, **options}
    return {"server": {"listen": ["127.0.0.1:0"], "document-root": str(www)}, "route": [route]}


async def test_a_lingering_script_does_not_delay_the_next_request(nursery: trio.Nursery, tmp_path: Path) -> None:
    www = make_docroot(tmp_path)
    (www / "cgi" / "straggler.py").write_text(STRAGGLER)
    server = await start_server(nursery, _routes(www))
    client = await RawClient.tcp(server.port)
    await client.send(b"GET /cgi/straggler.py HTTP/1.1\r\nHost: x\r\n\r\n")
    first = await client.read_response()
    assert first.status == 200
    pid = int(first.body)
    await client.send(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
    second = await client.read_response()
    assert second.status == 200
    assert pid_alive(pid), "the next request waited until the script was killed"
    await wait_pid_gone(pid)  # and it is killed and reaped in the background
    await client.aclose()


async def test_a_504_is_not_held_back_by_a_script_that_ignores_sigterm(nursery: trio.Nursery, tmp_path: Path) -> None:
    www = make_docroot(tmp_path)
    (www / "cgi" / "silent.py").write_text(SILENT)
    server = await start_server(nursery, _routes(www, **{"read-timeout": 2, "environment": {"PID_DIR": str(tmp_path)}}))
    client = await RawClient.tcp(server.port)
    await client.send(b"GET /cgi/silent.py HTTP/1.1\r\nHost: x\r\n\r\n")
    response = await client.read_response()
    assert response.status == 504
    pid = int((tmp_path / "silent.pid").read_text())
    assert pid_alive(pid), "the 504 waited until the script was killed"
    await wait_pid_gone(pid)
    await client.aclose()


async def test_shutting_down_kills_a_straggler_at_once(tmp_path: Path) -> None:
    www = make_docroot(tmp_path)
    (www / "cgi" / "straggler.py").write_text(STRAGGLER)
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, _routes(www))
        client = await RawClient.tcp(server.port)
        await client.send(b"GET /cgi/straggler.py HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        pid = int((await client.read_response()).body)
        await client.aclose()
        nursery.cancel_scope.cancel()
    # serve() returned: nothing it started is left running.
    assert not pid_alive(pid)
