"""The ``fastcgi`` handler.

* Through ``examples/fastcgi/fcgi_cgi.py`` spawned with ``bin-path``: the CGI
  test scripts and the seed's ``ws_echo.py`` (the seed uses lighttpd's
  fcgi-cgi, which Debian does not ship).
* Against a scripted FastCGI server on a real socket: record edge cases
  (split records, padding, stray and management records, ``FCGI_STDERR``,
  early EOF, garbage) and what wstrio sends (the held-back ``FCGI_STDIN``
  end record while an upgrade is possible).
* Through fcgiwrap when it is installed (ordinary requests only: fcgiwrap
  waits for the end of ``FCGI_STDIN`` before it starts the program, so a
  program that switches protocols cannot work behind it).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers import RawClient, serve_tcp_backend, start_server, wait_pid_gone, ws_client
from tests.integration.gateway_support import (
    FCGI_CGI,
    check_example,
    check_seed_ws_echo,
    h2_seed_session,
    http_request,
    make_docroot,
    start_context,
    websockets_echo,
)
from wstrio import config_from_mapping
from wstrio._sansio.cgi import fastcgi as fcgi

FCGIWRAP = shutil.which("fcgiwrap") or "/usr/sbin/fcgiwrap"


@pytest.fixture
def www(tmp_path: Path) -> Path:
    return make_docroot(tmp_path).resolve()


def fastcgi_config(
    www: Path, tmp_path: Path, *, path: str = "/", backend: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One fastcgi route to a spawned fcgi_cgi.py; ``check-local`` is on unless ``backend`` says otherwise."""
    host = {
        "socket": str(tmp_path / "fcgi.sock"),
        "bin-path": str(FCGI_CGI),
        "min-procs": 1,
        "max-procs": 1,
        **(backend or {}),
    }
    route = {"path": path, "handler": "fastcgi", "upgrade": True, "backend": [host]}
    return {"server": {"document-root": str(www)}, "route": [route]}


# --------------------------------------------------------------------------
# Through fcgi_cgi.py
# --------------------------------------------------------------------------


async def test_environment_and_post(nursery: trio.Nursery, www: Path, tmp_path: Path) -> None:
    server = await start_server(nursery, fastcgi_config(www, tmp_path))
    response = await http_request(server.port, "GET", "/cgi/env.py/x?q=1", headers=[("X-Custom", "yes")])
    assert response.status == 200
    env = json.loads(response.body)["environ"]
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("/cgi/env.py", "/x", "q=1")
    assert (env["GATEWAY_INTERFACE"], env["HTTP_X_CUSTOM"]) == ("CGI/1.1", "yes")
    body = os.urandom(200_000)  # several FCGI_STDIN and FCGI_STDOUT records
    response = await http_request(server.port, "POST", "/cgi/echo_body.py", body=body)
    assert (response.status, response.body) == (200, body)


async def test_program_starts_before_stdin_ends(nursery: trio.Nursery, www: Path, tmp_path: Path) -> None:
    server = await start_server(nursery, fastcgi_config(www, tmp_path))
    client = await RawClient.tcp(server.port)
    await client.send(b"POST /cgi/stream.py HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n")
    assert (await client.read_head()).status == 200
    await client.send(b"one\n")
    await client.read_until(b"got one\n")
    await client.send(b"two\n")
    await client.read_until(b"got two\n")
    await client.aclose()


async def test_stderr_records_are_logged(
    nursery: trio.Nursery, www: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wstrio.backend")
    server = await start_server(nursery, fastcgi_config(www, tmp_path))
    assert (await http_request(server.port, "GET", "/cgi/crash.py")).status == 502
    backend = [r.getMessage() for r in caplog.records if r.name == "wstrio.backend"]
    assert any(m.startswith("fastcgi ") and m.endswith(": crash.py: something went wrong") for m in backend)
    assert any(m.endswith(": second line") for m in backend)
    assert any("application status 3" in m for m in backend)  # from FCGI_END_REQUEST


async def test_seed_configuration_runs_ws_echo(nursery: trio.Nursery, www: Path, tmp_path: Path) -> None:
    # The seed: fastcgi.server = ("/ws/" => (( "socket" => ..., "bin-path" => fcgi-cgi,
    #   "check-local" => "disable", "min-procs" => 1, "max-procs" => 1, "upgrade" => 1 )))
    server = await start_server(nursery, fastcgi_config(www, tmp_path, path="/ws/", backend={"check-local": False}))
    client = await RawClient.tcp(server.port)
    head = await client.ws_handshake("/ws/ws_echo.py", headers=[("Origin", "http://localhost")])
    assert head.status == 101
    await check_seed_ws_echo(client)
    await client.aclose()


async def test_fixed_ws_echo_with_the_websockets_client(nursery: trio.Nursery, www: Path, tmp_path: Path) -> None:
    server = await start_server(nursery, fastcgi_config(www, tmp_path, path="/ws/", backend={"check-local": False}))
    result = await ws_client(websockets_echo, server.url("/ws/ws_echo_fixed.py", scheme="ws"))
    assert result == ("hello websockets", b"binary \x01\x02", True)


async def test_upgrade_client_eof_ends_stdin(nursery: trio.Nursery, www: Path, tmp_path: Path) -> None:
    server = await start_server(nursery, fastcgi_config(www, tmp_path))
    client = await RawClient.tcp(server.port)
    await client.send(b"GET /cgi/raw_echo.py HTTP/1.1\r\nHost: x\r\nUpgrade: toy\r\nConnection: upgrade\r\n\r\n")
    assert (await client.read_head()).status == 101
    assert await client.read_exactly(6) == b"hello "
    await client.send(b"x" * 100_000)  # more than one FCGI_STDIN record
    assert await client.read_exactly(100_000) == b"x" * 100_000
    # The client's EOF becomes the empty FCGI_STDIN record: the wrapper
    # closes the script's stdin and the script says bye.
    await client.send_eof()
    assert await client.read_to_eof() == b"bye"
    await client.aclose()


async def test_silent_program_is_504_and_stopped(nursery: trio.Nursery, www: Path, tmp_path: Path) -> None:
    config = fastcgi_config(www, tmp_path, backend={"read-timeout": 2})
    config["route"][0]["environment"] = {"PID_DIR": str(tmp_path)}
    server = await start_server(nursery, config)
    assert (await http_request(server.port, "GET", "/cgi/slow.py")).status == 504
    await wait_pid_gone(int((tmp_path / "slow.pid").read_text()))


async def test_h2_websocket(nursery: trio.Nursery, www: Path, tmp_path: Path) -> None:
    config = config_from_mapping(fastcgi_config(www, tmp_path, path="/ws/", backend={"check-local": False}))
    context = await start_context(nursery, config)
    exchange = await h2_seed_session(context, "/ws/ws_echo.py")
    assert "fastcgi upgrade via" in exchange.note


# --------------------------------------------------------------------------
# A scripted FastCGI server
# --------------------------------------------------------------------------


class Peer:
    """The server side of one FastCGI connection: records in, bytes out."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.decoder = fcgi.RecordDecoder()
        self.pending: list[fcgi.Record] = []
        self.received: list[fcgi.Record] = []

    async def record(self) -> fcgi.Record | None:
        while not self.pending:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.pending += self.decoder.feed(data)
        record = self.pending.pop(0)
        self.received.append(record)
        return record

    async def request(self) -> dict[bytes, bytes]:
        """Read BEGIN_REQUEST and the PARAMS stream; return the parameters."""
        params = b""
        while (record := await self.record()) is not None:
            if record.type == fcgi.PARAMS:
                if not record.content:
                    return dict(fcgi.decode_name_value_pairs(params))
                params += record.content
        msg = "EOF before the end of FCGI_PARAMS"
        raise AssertionError(msg)

    async def stdin(self) -> tuple[bytes, bool]:
        """The FCGI_STDIN content that arrives next, and whether it was the end record."""
        record = await self.record()
        assert record is not None
        assert record.type == fcgi.STDIN
        return record.content, not record.content

    async def send(self, *records: bytes) -> None:
        await self.stream.send_all(b"".join(records))

    async def stdout(self, data: bytes) -> None:
        await self.send(fcgi.encode_stream(fcgi.STDOUT, 1, data))

    async def end(self, protocol_status: int = fcgi.REQUEST_COMPLETE) -> None:
        await self.send(fcgi.encode_record(fcgi.STDOUT, 1), fcgi.encode_end_request(1, 0, protocol_status))


def padded(rtype: int, request_id: int, content: bytes, padding: int) -> bytes:
    """A record with an unusual amount of padding."""
    header = bytes((1, rtype)) + request_id.to_bytes(2, "big") + len(content).to_bytes(2, "big") + bytes((padding, 0))
    return header + content + b"\xee" * padding


Scenario = Callable[[Peer, dict[bytes, bytes]], Awaitable[None]]


async def dribble(peer: Peer, params: dict[bytes, bytes]) -> None:
    wire = b"".join(
        [
            fcgi.encode_record(fcgi.STDERR, 1, b"first warning\nsecond "),
            fcgi.encode_record(fcgi.UNKNOWN_TYPE, 0, bytes(8)),  # a management record
            fcgi.encode_record(fcgi.STDOUT, 2, b"Status: 500\r\n\r\nnot ours"),  # another request id
            padded(fcgi.STDOUT, 1, b"Status: 201 Created\r\nContent-Type: text/plain\r\n", 255),
            padded(fcgi.STDOUT, 1, b"X-A: 1\r\n\r\nhel", 0),
            fcgi.encode_record(fcgi.STDERR, 1, b"warning\n"),
            fcgi.encode_record(fcgi.STDOUT, 1, b"lo"),
            fcgi.encode_record(fcgi.STDOUT, 1),
            fcgi.encode_end_request(1),
        ]
    )
    for i in range(len(wire)):  # one byte at a time
        await peer.send(wire[i : i + 1])


async def eof_before_head(peer: Peer, params: dict[bytes, bytes]) -> None:
    await peer.stdout(b"Status: 200\r\n")


async def eof_mid_body(peer: Peer, params: dict[bytes, bytes]) -> None:
    await peer.stdout(b"Content-Length: 10\r\n\r\nhalf!")


async def not_fastcgi(peer: Peer, params: dict[bytes, bytes]) -> None:
    await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


async def overloaded(peer: Peer, params: dict[bytes, bytes]) -> None:
    await peer.send(fcgi.encode_end_request(1, 0, fcgi.OVERLOADED))


async def inspect(peer: Peer, params: dict[bytes, bytes]) -> None:
    body = b""
    while True:
        content, end = await peer.stdin()
        if end:
            break
        body += content
    await peer.stdout(b"Content-Type: application/octet-stream\r\n\r\n" + body)
    await peer.end()


async def echo_upgrade(peer: Peer, params: dict[bytes, bytes]) -> None:
    # Answer the switch before any FCGI_STDIN: wstrio must not have ended it.
    await peer.stdout(b"Status: 101\r\nUpgrade: toy\r\n\r\n")
    while True:
        content, end = await peer.stdin()
        if end:
            break
        await peer.stdout(content)
    await peer.stdout(b"stdin ended")
    await peer.end()


async def decline_upgrade(peer: Peer, params: dict[bytes, bytes]) -> None:
    await peer.stdout(b"Status: 200\r\nContent-Length: 2\r\n\r\nno")
    # Only now may the held-back end of FCGI_STDIN come.
    content, end = await peer.stdin()
    assert (content, end) == (b"", True)
    await peer.end()


SCENARIOS: dict[bytes, Scenario] = {
    b"/dribble": dribble,
    b"/eof-before-head": eof_before_head,
    b"/eof-mid-body": eof_mid_body,
    b"/not-fastcgi": not_fastcgi,
    b"/overloaded": overloaded,
    b"/inspect": inspect,
    b"/echo-upgrade": echo_upgrade,
    b"/decline-upgrade": decline_upgrade,
}


class ScriptedServer:
    """Runs the scenario named by each request's SCRIPT_NAME; keeps every connection's records."""

    def __init__(self) -> None:
        self.peers: list[Peer] = []
        self.params: list[dict[bytes, bytes]] = []

    async def handle(self, stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        self.peers.append(peer)
        params = await peer.request()
        self.params.append(params)
        await SCENARIOS[params[b"SCRIPT_NAME"]](peer, params)


@pytest.fixture
async def scripted(nursery: trio.Nursery, www: Path) -> tuple[ScriptedServer, int]:
    """A scripted FastCGI server and a wstrio in front of it; returns both (wstrio's port)."""
    fake = ScriptedServer()
    port = await serve_tcp_backend(nursery, fake.handle)
    route = {
        "path": "/",
        "handler": "fastcgi",
        "upgrade": True,
        "backend": [{"host": "127.0.0.1", "port": port, "check-local": False}],
    }
    server = await start_server(nursery, {"server": {"document-root": str(www)}, "route": [route]})
    return fake, server.port


async def test_records_split_padded_and_interleaved(
    scripted: tuple[ScriptedServer, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="wstrio.backend")
    _, port = scripted
    response = await http_request(port, "GET", "/dribble")
    assert (response.status, response.header("x-a"), response.body) == (201, "1", b"hello")
    lines = [r.getMessage().partition(": ")[2] for r in caplog.records if r.name == "wstrio.backend"]
    assert lines == ["first warning", "second warning"]  # a line split across records is kept whole


async def test_what_wstrio_sends(scripted: tuple[ScriptedServer, int]) -> None:
    fake, port = scripted
    body = os.urandom(70_000)
    long_value = "v" * 300  # a 4-byte name-value length
    response = await http_request(port, "POST", "/inspect", body=body, headers=[("X-Long", long_value)])
    assert (response.status, response.body) == (200, body)
    (peer,) = fake.peers
    begin = peer.received[0]
    assert (begin.type, begin.request_id) == (fcgi.BEGIN_REQUEST, 1)
    assert fcgi.parse_begin_request(begin.content) == (fcgi.RESPONDER, 0)  # no FCGI_KEEP_CONN
    assert {r.request_id for r in peer.received} == {1}
    (params,) = fake.params
    assert params[b"HTTP_X_LONG"] == long_value.encode()
    assert params[b"CONTENT_LENGTH"] == b"70000"
    stdin = [r for r in peer.received if r.type == fcgi.STDIN]
    assert stdin[-1].content == b""
    assert b"".join(r.content for r in stdin) == body
    assert all(len(r.content) <= fcgi.FCGI_MAX_CONTENT for r in stdin)


async def test_eof_before_head_is_502(scripted: tuple[ScriptedServer, int]) -> None:
    assert (await http_request(scripted[1], "GET", "/eof-before-head")).status == 502


async def test_eof_mid_body_aborts_the_response(scripted: tuple[ScriptedServer, int]) -> None:
    client = await RawClient.tcp(scripted[1])
    await client.send(b"GET /eof-mid-body HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await client.read_head()
    assert (head.status, head.header(b"content-length")) == (200, b"10")
    assert await client.read_to_eof() == b"half!"  # and the connection is closed
    await client.aclose()


async def test_not_fastcgi_is_502(scripted: tuple[ScriptedServer, int]) -> None:
    assert (await http_request(scripted[1], "GET", "/not-fastcgi")).status == 502


async def test_refused_request_is_502_and_logged(
    scripted: tuple[ScriptedServer, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="wstrio.backend")
    assert (await http_request(scripted[1], "GET", "/overloaded")).status == 502
    assert any("FCGI_OVERLOADED" in r.getMessage() for r in caplog.records)


async def test_upgrade_holds_back_the_stdin_end(scripted: tuple[ScriptedServer, int]) -> None:
    fake, port = scripted
    client = await RawClient.tcp(port)
    await client.send(b"GET /echo-upgrade HTTP/1.1\r\nHost: x\r\nUpgrade: toy\r\nConnection: upgrade\r\n\r\n")
    assert (await client.read_head()).status == 101
    await client.send(b"abc")
    assert await client.read_exactly(3) == b"abc"
    await client.send_eof()
    assert await client.read_to_eof() == b"stdin ended"
    await client.aclose()
    (peer,) = fake.peers
    stdin = [r.content for r in peer.received if r.type == fcgi.STDIN]
    assert stdin == [b"abc", b""]  # the end record only after the client's EOF


async def test_declined_upgrade_sends_the_stdin_end(scripted: tuple[ScriptedServer, int]) -> None:
    client = await RawClient.tcp(scripted[1])
    response = await client.request(
        b"GET /decline-upgrade HTTP/1.1\r\nHost: x\r\nUpgrade: toy\r\nConnection: upgrade\r\n\r\n"
    )
    assert (response.status, response.body, response.header(b"upgrade")) == (200, b"no", None)
    await client.aclose()


# --------------------------------------------------------------------------
# fcgiwrap (optional)
# --------------------------------------------------------------------------


@pytest.mark.skipif(not os.access(FCGIWRAP, os.X_OK), reason="fcgiwrap is not installed (apt-get install fcgiwrap)")
async def test_fcgiwrap(nursery: trio.Nursery, www: Path, tmp_path: Path) -> None:
    server = await start_server(nursery, fastcgi_config(www, tmp_path, backend={"bin-path": FCGIWRAP}))
    response = await http_request(server.port, "GET", "/cgi/env.py/x?q=1")
    assert response.status == 200
    env = json.loads(response.body)["environ"]
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/cgi/env.py", "/x")
    response = await http_request(server.port, "POST", "/cgi/echo_body.py", body=b"through fcgiwrap")
    assert (response.status, response.body) == (200, b"through fcgiwrap")


async def test_example(nursery: trio.Nursery, tmp_path: Path) -> None:
    """``examples/fastcgi/wstrio.toml``, the seed's configuration translated, runs the seed's files."""
    await check_example(nursery, "fastcgi", tmp_path)
