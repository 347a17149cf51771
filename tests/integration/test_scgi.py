"""The ``scgi`` handler, through ``examples/scgi/scgi_cgi.py`` spawned with ``bin-path``.

The wrapper runs the CGI test scripts of ``tests/data/cgi`` (and the seed's
``ws_echo.py``) for SCGI requests, as lighttpd's scgi-cgi does in the seed.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers import RawClient, start_server, unused_tcp_port, wait_pid_gone, ws_client
from tests.integration.gateway_support import (
    SCGI_CGI,
    check_example,
    check_seed_ws_echo,
    h2_seed_session,
    http_request,
    make_docroot,
    start_context,
    websockets_echo,
)
from wstrio import config_from_mapping


@pytest.fixture
def www(tmp_path: Path) -> Path:
    return make_docroot(tmp_path).resolve()


def scgi_config(www: Path, tmp_path: Path, *, path: str = "/", backend: dict[str, Any] | None = None) -> dict[str, Any]:
    """One scgi route to a spawned scgi_cgi.py; ``check-local`` is on unless ``backend`` says otherwise."""
    host = {
        "socket": str(tmp_path / "scgi.sock"),
        "bin-path": str(SCGI_CGI),
        "min-procs": 1,
        "max-procs": 1,
        **(backend or {}),
    }
    route = {"path": path, "handler": "scgi", "upgrade": True, "backend": [host]}
    return {"server": {"document-root": str(www)}, "route": [route]}


async def test_environment(nursery: trio.Nursery, www: Path, tmp_path: Path) -> None:
    server = await start_server(nursery, scgi_config(www, tmp_path))
    response = await http_request(server.port, "GET", "/cgi/env.py/x/y?q=1", headers=[("X-Custom", "yes")])
    assert response.status == 200
    assert response.header("x-test") == "env"
    env = json.loads(response.body)["environ"]
    assert env["SCGI"] == "1"
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("/cgi/env.py", "/x/y", "q=1")
    assert env["SCRIPT_FILENAME"] == str(www / "cgi" / "env.py")
    assert (env["CONTENT_LENGTH"], env["REQUEST_METHOD"], env["HTTP_X_CUSTOM"]) == ("0", "GET", "yes")
    assert env["SERVER_PORT"] == str(server.port)


async def test_post_body(nursery: trio.Nursery, www: Path, tmp_path: Path) -> None:
    server = await start_server(nursery, scgi_config(www, tmp_path))
    body = os.urandom(200_000)
    response = await http_request(server.port, "POST", "/cgi/echo_body.py", body=body)
    assert (response.status, response.body) == (200, body)


async def test_bodies_stream_both_ways(nursery: trio.Nursery, www: Path, tmp_path: Path) -> None:
    server = await start_server(nursery, scgi_config(www, tmp_path))
    client = await RawClient.tcp(server.port)
    await client.send(b"POST /cgi/stream.py HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n")
    assert (await client.read_head()).status == 200
    await client.send(b"one\n")
    await client.read_until(b"got one\n")  # answered before the rest of the body exists
    await client.send(b"two\n")
    await client.read_until(b"got two\n")
    await client.aclose()


async def test_check_local(nursery: trio.Nursery, www: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("")
    (www / "cgi" / "outside.py").symlink_to(outside)
    server = await start_server(nursery, scgi_config(www, tmp_path))
    assert (await http_request(server.port, "GET", "/cgi/missing.py")).status == 404
    assert (await http_request(server.port, "GET", "/cgi/outside.py")).status == 403


def test_check_local_needs_document_root() -> None:
    route = {"path": "/", "handler": "scgi", "backend": [{"host": "127.0.0.1", "port": 1}]}
    with pytest.raises(ValueError, match=r"check-local = true \(the default\) needs server.document-root"):
        config_from_mapping({"route": [route]})
    route["backend"] = [{"host": "127.0.0.1", "port": 1}, {"host": "127.0.0.1", "port": 2, "check-local": False}]
    with pytest.raises(ValueError, match="check-local must be the same for every backend"):
        config_from_mapping({"server": {"document-root": "/srv"}, "route": [route]})


async def test_seed_configuration_runs_ws_echo(nursery: trio.Nursery, www: Path, tmp_path: Path) -> None:
    # The seed: scgi.server = ("/ws/" => (( "socket" => ..., "bin-path" => scgi-cgi,
    #   "check-local" => "disable", "min-procs" => 1, "max-procs" => 1, "upgrade" => 1 )))
    server = await start_server(nursery, scgi_config(www, tmp_path, path="/ws/", backend={"check-local": False}))
    client = await RawClient.tcp(server.port)
    head = await client.ws_handshake("/ws/ws_echo.py", headers=[("Origin", "http://localhost")])
    assert head.status == 101
    assert head.header(b"sec-websocket-location") == b"ws://localhost/ws/ws_echo.py"
    await check_seed_ws_echo(client)
    await client.aclose()


async def test_fixed_ws_echo_with_the_websockets_client(nursery: trio.Nursery, www: Path, tmp_path: Path) -> None:
    server = await start_server(nursery, scgi_config(www, tmp_path, path="/ws/", backend={"check-local": False}))
    result = await ws_client(websockets_echo, server.url("/ws/ws_echo_fixed.py", scheme="ws"))
    assert result == ("hello websockets", b"binary \x01\x02", True)


async def test_upgrade_raw_bytes_and_client_eof(nursery: trio.Nursery, www: Path, tmp_path: Path) -> None:
    server = await start_server(nursery, scgi_config(www, tmp_path))
    client = await RawClient.tcp(server.port)
    await client.send(b"GET /cgi/raw_echo.py HTTP/1.1\r\nHost: x\r\nUpgrade: toy\r\nConnection: upgrade\r\n\r\n")
    head = await client.read_head()
    assert (head.status, head.header(b"upgrade")) == (101, b"toy")
    assert await client.read_exactly(6) == b"hello "
    await client.send(b"ping\n")
    assert await client.read_exactly(5) == b"ping\n"
    # The client's EOF reaches the backend as shutdown(SHUT_WR); the wrapper
    # closes the script's stdin, and the script says bye.
    await client.send_eof()
    assert await client.read_to_eof() == b"bye"
    await client.aclose()


async def test_failures(nursery: trio.Nursery, www: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="wstrio.connection")
    config = scgi_config(www, tmp_path, backend={"read-timeout": 2})
    config["route"][0]["environment"] = {"PID_DIR": str(tmp_path)}
    server = await start_server(nursery, config)
    assert (await http_request(server.port, "GET", "/cgi/crash.py")).status == 502
    assert (await http_request(server.port, "GET", "/cgi/garbage.py")).status == 502
    assert (await http_request(server.port, "GET", "/cgi/slow.py")).status == 504
    # The wrapper saw the connection close and stopped the script.
    await wait_pid_gone(int((tmp_path / "slow.pid").read_text()))
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "read-timeout" in messages


async def test_local_redirect(nursery: trio.Nursery, www: Path, tmp_path: Path) -> None:
    server = await start_server(nursery, scgi_config(www, tmp_path))
    response = await http_request(server.port, "GET", "/cgi/redirect.py?local")
    assert response.status == 200
    assert json.loads(response.body)["environ"]["QUERY_STRING"] == "from=redirect"


async def test_no_backend_is_503(nursery: trio.Nursery, www: Path) -> None:
    route = {
        "path": "/",
        "handler": "scgi",
        "backend": [{"host": "127.0.0.1", "port": unused_tcp_port(), "check-local": False}],
    }
    server = await start_server(nursery, {"server": {"document-root": str(www)}, "route": [route]})
    assert (await http_request(server.port, "GET", "/cgi/env.py")).status == 503


async def test_h2_websocket(nursery: trio.Nursery, www: Path, tmp_path: Path) -> None:
    # lighttpd never contacts the SCGI backend for an HTTP/2 extended CONNECT
    # (it waits for a request body that never ends); wstrio treats the stream
    # as the upgraded connection it is.
    config = config_from_mapping(scgi_config(www, tmp_path, path="/ws/", backend={"check-local": False}))
    context = await start_context(nursery, config)
    exchange = await h2_seed_session(context, "/ws/ws_echo.py")
    assert "scgi upgrade via" in exchange.note


async def test_example(nursery: trio.Nursery, tmp_path: Path) -> None:
    """``examples/scgi/wstrio.toml``, the seed's configuration translated, runs the seed's files."""
    await check_example(nursery, "scgi", tmp_path)
