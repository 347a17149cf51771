"""HTTP/2 end to end: h2c by prior knowledge, extended CONNECT (RFC 8441), flow control.

The client is h2's own client state machine on a real socket
(:mod:`tests.h2client`); WebSocket frames on the streams are made by a
wsproto client connection.  ``nghttp`` (Debian ``nghttp2-client``) is the
independent client for static files.  The idle timers run :func:`serve_h2`
on memory streams under the autojump clock (no real sleeps); TLS and ALPN
are in ``test_tls.py``.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import struct
from pathlib import Path
from typing import Any

import h2.events
import h2.settings
import pytest
import trio
import trio.testing
import trustme
from h2.errors import ErrorCodes
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Message, TextMessage
from wsproto.events import Request as WsRequest

import wstrio
from tests.h2client import H2Stream, StreamReset, open_h2_client, run_h2_client
from tests.helpers import echo_route, make_config, serve_echo_tcp, serve_tcp_backend, start_server
from tests.integration.gateway_support import FCGI_CGI, SCGI_CGI, make_docroot
from wstrio._io.backends.connect import SocketConnector
from wstrio._io.context import ServerContext
from wstrio._io.http.h2.connection import PREFACE, serve_h2
from wstrio.testing import MemoryConnector, MemoryListener

KiB = 1 << 10
MiB = 1 << 20
SETTINGS = h2.settings.SettingCodes


async def echo_h2_server(nursery: trio.Nursery, root: Path | None = None, /, **server: Any) -> wstrio.Server:
    """wstrio with ``/ws/`` tunnelled to a TCP echo backend and ``root`` as document root."""
    port = await serve_echo_tcp(nursery)
    settings: dict[str, Any] = dict(server)
    if root is not None:
        settings["document-root"] = str(root)
    return await start_server(nursery, {"server": settings, "route": [echo_route(port)]})


async def test_h2c_prior_knowledge_static_file_and_settings(nursery: trio.Nursery, tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_bytes(b"hello over h2c\n")
    server = await echo_h2_server(nursery, tmp_path)
    async with open_h2_client("127.0.0.1", server.port) as client:
        status, stream, body = await client.get("/hello.txt", scheme="http")
        assert (status, body) == (200, b"hello over h2c\n")
        assert stream.header(b"content-type") == b"text/plain; charset=utf-8"
        settings = client.remote_settings
        assert settings[SETTINGS.ENABLE_CONNECT_PROTOCOL] == 1
        assert settings.max_concurrent_streams == 100
        assert settings.initial_window_size == 65536
        assert settings.max_header_list_size == 8192
        status, _, _ = await client.get("/missing", scheme="http")
        assert status == 404


async def test_http1_still_served_on_a_cleartext_listener(nursery: trio.Nursery, tmp_path: Path) -> None:
    # The preface sniffing must hand every byte it read to HTTP/1.1.
    (tmp_path / "a.txt").write_bytes(b"A")
    server = await echo_h2_server(nursery, tmp_path)
    requests = (
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PUT /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )
    for request in requests:
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            for i in range(0, len(request), 2):  # dribbled: the sniffer must not wait for 24 bytes
                await stream.send_all(request[i : i + 2])
            reply = await stream.receive_some(65536)
        assert reply.startswith(b"HTTP/1.1 200" if request.startswith(b"GET") else b"HTTP/1.1 405")


async def test_http2_off_means_no_h2c(nursery: trio.Nursery) -> None:
    server = await start_server(nursery, {"server": {"http2": False}})
    async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
        await stream.send_all(PREFACE)
        reply = await stream.receive_some(65536)
    assert reply.startswith(b"HTTP/1.1 4")  # h11 refuses the PRI request


async def test_websocket_payload_both_ways_and_close(nursery: trio.Nursery) -> None:
    server = await echo_h2_server(nursery)
    async with open_h2_client("127.0.0.1", server.port) as client:
        ws = await client.websocket("/ws/", scheme="http")
        assert ws.stream.header(b"sec-websocket-accept") is None
        assert ws.stream.header(b"upgrade") is None
        await ws.send_text("hello")
        assert await ws.receive_message() == "hello"
        # Much more than the stream window (64 KiB) both ways: flow control
        # has to hand the window back as the tunnel reads.
        big = "x" * (700 * KiB)
        await ws.send_text(big)
        got = ""
        while len(got) < len(big):
            message = await ws.receive_message()
            assert isinstance(message, str)
            got += message
        assert got == big
        close = await ws.close(1000)
        assert close.code == 1000
        assert await ws.stream.receive() == b""  # END_STREAM after the CLOSE frame
        assert ws.stream.ended


async def test_binary_frame_type_over_h2(nursery: trio.Nursery) -> None:
    port = await serve_echo_tcp(nursery)
    server = await start_server(nursery, {"route": [echo_route(port, **{"frame-type": "binary"})]})
    async with open_h2_client("127.0.0.1", server.port) as client:
        ws = await client.websocket("/ws/", scheme="http")
        await ws.send_bytes(bytes(range(256)) * 100)
        got = b""
        while len(got) < 25600:
            message = await ws.receive_message()
            assert isinstance(message, bytes)
            got += message
        assert got == bytes(range(256)) * 100


async def test_client_end_stream_is_a_clean_half_close(nursery: trio.Nursery) -> None:
    # lighttpd answers this with RST_STREAM(PROTOCOL_ERROR).  wstrio passes
    # the EOF to the backend, which finishes: its echo and then CLOSE 1001.
    server = await echo_h2_server(nursery)
    async with open_h2_client("127.0.0.1", server.port) as client:
        ws = await client.websocket("/ws/", scheme="http")
        await ws.send_text("last words")
        await ws.stream.end()
        assert await ws.receive_message() == "last words"
        with pytest.raises(EOFError):
            await ws.receive_message()
        assert ws.closed is not None
        assert ws.closed.code == 1001
        assert await ws.stream.receive() == b""
        assert ws.stream.reset_code is None


async def test_client_reset_closes_the_backend_and_only_that_stream(nursery: trio.Nursery) -> None:
    backend_eof = trio.Event()

    async def backend(stream: trio.SocketStream) -> None:
        try:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass
        backend_eof.set()

    port = await serve_tcp_backend(nursery, backend)
    echo_port = await serve_echo_tcp(nursery)
    server = await start_server(
        nursery, {"route": [echo_route(port, path="/reset/"), echo_route(echo_port, path="/ws/")]}
    )
    async with open_h2_client("127.0.0.1", server.port) as client:
        other = await client.websocket("/ws/", scheme="http")
        doomed = await client.websocket("/reset/", scheme="http")
        await doomed.send_text("ping")
        assert await doomed.receive_message() == "ping"
        await doomed.stream.reset(ErrorCodes.CANCEL)
        with trio.fail_after(5):
            await backend_eof.wait()
        await other.send_text("still here")
        assert await other.receive_message() == "still here"
        assert (await other.close()).code == 1000


async def test_more_than_eight_websockets_on_one_connection(nursery: trio.Nursery) -> None:
    # lighttpd has room for 8 streams per connection; wstrio's default is 100.
    server = await echo_h2_server(nursery)
    async with open_h2_client("127.0.0.1", server.port) as client:
        sockets = [await client.websocket("/ws/", scheme="http") for _ in range(30)]

        async def talk(i: int) -> None:
            ws = sockets[i]
            for j in range(5):
                await ws.send_text(f"{i}:{j}")
                assert await ws.receive_message() == f"{i}:{j}"

        async with trio.open_nursery() as talkers:
            for i in range(len(sockets)):
                talkers.start_soon(talk, i)
        for ws in sockets:
            assert (await ws.close()).code == 1000


async def test_slow_reader_on_one_stream_does_not_block_the_others(nursery: trio.Nursery) -> None:
    server = await echo_h2_server(nursery)
    async with open_h2_client("127.0.0.1", server.port) as client:
        # The slow stream: its DATA is never acknowledged, so wstrio's send
        # window for it runs out; the echo backend then stops reading, and
        # wstrio stops acknowledging our DATA on that stream.
        slow = await client.websocket("/ws/", scheme="http", auto_ack=False)
        fast = [await client.websocket("/ws/", scheme="http") for _ in range(3)]

        flooded = 0

        async def flood() -> None:
            nonlocal flooded
            chunk = "s" * (64 * KiB)
            for _ in range(64):  # 4 MiB: far beyond every window and socket buffer
                await slow.send_text(chunk)
                flooded += len(chunk)

        async with trio.open_nursery() as inner:
            inner.start_soon(flood)
            # Wait until wstrio has filled the slow stream's window and stopped.
            with trio.fail_after(10):
                await slow.stream.wait_received(65535 - 100)
            # Meanwhile every other stream moves a megabyte each way.
            payload = "f" * (256 * KiB)

            async def talk(ws: Any) -> None:
                for _ in range(4):
                    await ws.send_text(payload)
                    got = 0
                    while got < len(payload):
                        got += len(await ws.receive_message())

            with trio.fail_after(20):
                async with trio.open_nursery() as talkers:
                    for ws in fast:
                        talkers.start_soon(talk, ws)
            # The slow stream still sits at its window: nothing more was sent.
            assert slow.stream.received_total <= 65535
            assert slow.stream.send_window() < 64 * KiB  # and our sending on it stalled
            inner.cancel_scope.cancel()
        # Reading it again lets it go on: everything we sent comes back.
        assert flooded > 200 * KiB
        with trio.fail_after(10):
            while slow.stream.received_total < flooded:
                # Ack what arrived (data may arrive while the ack is being
                # flushed), and wait only when there is nothing left to ack:
                # otherwise the server waits for our WINDOW_UPDATE and we for
                # its data.
                if slow.stream.unacked:
                    await slow.stream.ack()
                else:
                    await slow.stream._wait()
        for ws in fast:
            assert (await ws.close()).code == 1000


async def test_stream_limit_is_advertised_and_configurable(nursery: trio.Nursery) -> None:
    server = await echo_h2_server(nursery, **{"h2-max-concurrent-streams": 3, "h2-initial-window-size": 16384})
    async with open_h2_client("127.0.0.1", server.port) as client:
        await client.settings_received.wait()
        assert client.remote_settings.max_concurrent_streams == 3
        assert client.remote_settings.initial_window_size == 16384
        sockets = [await client.websocket("/ws/", scheme="http") for _ in range(3)]
        for ws in sockets:
            await ws.send_text("x" * 100_000)
        for ws in sockets:
            got = 0
            while got < 100_000:
                got += len(await ws.receive_message())
        # A closed stream frees its slot.
        await sockets[0].close()
        await client.ping()
        again = await client.websocket("/ws/", scheme="http")
        await again.send_text("fourth")
        assert await again.receive_message() == "fourth"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        pytest.param(
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"chat"),
                (b":scheme", b"http"),
                (b":authority", b"x"),
                (b":path", b"/ws/"),
                (b"sec-websocket-version", b"13"),
            ],
            405,
            id="protocol-not-websocket",
        ),
        pytest.param(
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"websocket"),
                (b":authority", b"x"),
                (b"sec-websocket-version", b"13"),
            ],
            400,
            id="extended-connect-without-scheme-and-path",
        ),
        pytest.param([(b":method", b"CONNECT"), (b":authority", b"example.com:443")], 405, id="plain-connect"),
        pytest.param(
            [
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", b"x"),
                (b":path", b"/"),
                (b"upgrade", b"websocket"),
            ],
            400,
            id="upgrade-header",
        ),
        pytest.param(
            [
                (b":method", b"GET"),
                (b":protocol", b"websocket"),
                (b":scheme", b"http"),
                (b":authority", b"x"),
                (b":path", b"/ws/"),
            ],
            400,
            id="protocol-without-connect",
        ),
        pytest.param(
            [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"Bad", b"x")], 400, id="upper-case"
        ),
        pytest.param([(b":method", b"GET"), (b":scheme", b"http")], 400, id="no-path"),
        pytest.param(
            [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"x-big", b"y" * 9000)],
            431,
            id="header-list-too-large",
        ),
    ],
)
async def test_bad_requests_are_answered_on_their_stream(
    nursery: trio.Nursery, tmp_path: Path, raw: list[tuple[bytes, bytes]], status: int
) -> None:
    # h2 would make each of these a connection error; wstrio answers the one
    # stream (lighttpd's statuses) and the connection goes on.
    (tmp_path / "ok.txt").write_bytes(b"ok")
    server = await echo_h2_server(nursery, tmp_path)
    async with open_h2_client("127.0.0.1", server.port) as client:
        await client.settings_received.wait()
        client.conn.config.validate_outbound_headers = False
        client.conn.config.normalize_outbound_headers = False
        bad = await client.request("", "", raw=raw)
        assert await bad.response_headers() == status
        await bad.read_all()
        client.conn.config.validate_outbound_headers = True
        client.conn.config.normalize_outbound_headers = True
        got, _, body = await client.get("/ok.txt", scheme="http")
        assert (got, body) == (200, b"ok")
        ws = await client.websocket("/ws/", scheme="http")
        await ws.send_text("fine")
        assert await ws.receive_message() == "fine"


async def test_extended_connect_without_a_route(nursery: trio.Nursery, tmp_path: Path) -> None:
    # As lighttpd: a missing path is 404, an existing file 405 (a page is no WebSocket).
    (tmp_path / "page.html").write_bytes(b"<p>hi</p>")
    server = await echo_h2_server(nursery, tmp_path)
    async with open_h2_client("127.0.0.1", server.port) as client:
        missing = await client.open_websocket_stream("/nothing/here", scheme="http")
        assert await missing.response_headers() == 404
        page = await client.open_websocket_stream("/page.html", scheme="http")
        assert await page.response_headers() == 405
        assert b"405" in await page.read_all()


async def test_wstunnel_checks_apply_on_h2(nursery: trio.Nursery) -> None:
    port = await serve_echo_tcp(nursery)
    server = await start_server(nursery, {"route": [echo_route(port, origins=["https://good.example"])]})
    async with open_h2_client("127.0.0.1", server.port) as client:
        bad_origin = await client.open_websocket_stream("/ws/", [(b"origin", b"https://evil.example")], scheme="http")
        assert await bad_origin.response_headers() == 403
        no_origin = await client.open_websocket_stream("/ws/", scheme="http")
        assert await no_origin.response_headers() == 400
        await client.settings_received.wait()
        old_version = client.conn.get_next_available_stream_id()
        client.conn.send_headers(
            old_version,
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"websocket"),
                (b":scheme", b"http"),
                (b":authority", b"x"),
                (b":path", b"/ws/"),
                (b"origin", b"https://good.example"),
                (b"sec-websocket-version", b"8"),
            ],
        )
        client.streams[old_version] = H2Stream(client, old_version, auto_ack=True)
        await client.flush()
        assert await client.streams[old_version].response_headers() == 400
        assert client.streams[old_version].header(b"sec-websocket-version") == b"13"
        ws = await client.websocket("/ws/", [(b"origin", b"https://good.example")], scheme="http")
        await ws.send_text("ok")
        assert await ws.receive_message() == "ok"


async def test_unread_request_body_gives_its_window_back(nursery: trio.Nursery, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"f")
    server = await echo_h2_server(nursery, tmp_path, **{"h2-max-concurrent-streams": 2})
    async with open_h2_client("127.0.0.1", server.port) as client:
        for _ in range(20):  # 20 x 300 KiB, far more than the connection window (2 x 2 x 64 KiB)
            stream = await client.request("POST", "/f", scheme="http", end_stream=False)
            # The 405 may come (with RST_STREAM NO_ERROR: "stop sending") before we are done.
            with contextlib.suppress(StreamReset):
                await stream.send(b"b" * (300 * KiB), end_stream=True)
            assert await stream.response_headers() == 405
            assert stream.reset_code in (None, ErrorCodes.NO_ERROR)
        got, _, _ = await client.get("/f", scheme="http")
        assert got == 200


async def test_protocol_error_gets_goaway(nursery: trio.Nursery) -> None:
    server = await echo_h2_server(nursery)
    async with open_h2_client("127.0.0.1", server.port) as client:
        await client.settings_received.wait()
        # A DATA frame on stream 0 is a connection error (RFC 9113 6.1).
        await client.send_raw(struct.pack("!I", 4)[1:] + b"\x00\x00" + b"\x00\x00\x00\x00" + b"oops")
        with trio.fail_after(5):
            await client.closed_event.wait()
        assert client.goaway is not None
        assert client.goaway.error_code == ErrorCodes.PROTOCOL_ERROR


async def test_goaway_then_close_1001_on_server_shutdown(nursery: trio.Nursery) -> None:
    port = await serve_echo_tcp(nursery)
    config = make_config({"route": [echo_route(port)], "server": {"shutdown-timeout": 5}})
    async with trio.open_nursery() as server_nursery:
        server = await start_server(server_nursery, config)
        async with open_h2_client("127.0.0.1", server.port) as client:
            ws = await client.websocket("/ws/", scheme="http")
            await ws.send_text("before")
            assert await ws.receive_message() == "before"
            server_nursery.cancel_scope.cancel()
            with pytest.raises(EOFError):
                await ws.receive_message()
            assert ws.closed is not None
            assert ws.closed.code == 1001
            # The GOAWAY came first (NO_ERROR, our stream still counted), then the tunnel's CLOSE.
            assert client.goaway is not None
            assert client.goaway.error_code == ErrorCodes.NO_ERROR
            assert client.goaway.last_stream_id == ws.stream.stream_id
            await ws.stream.send(ws.ws.send(CloseConnection(code=1001)))
            with trio.fail_after(10):
                await client.closed_event.wait()


@pytest.mark.skipif(shutil.which("nghttp") is None, reason="nghttp (nghttp2-client) is not installed")
async def test_nghttp_fetches_static_files_over_tls(nursery: trio.Nursery, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_bytes(b"<h1>h2</h1>\n")
    (www / "big.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB: several windows
    server = await start_server(
        nursery,
        {
            "server": {
                "document-root": str(www),
                "tls": {"certificate": str(tmp_path / "cert.pem"), "private-key": str(tmp_path / "key.pem")},
            }
        },
    )
    base = f"https://127.0.0.1:{server.port}"
    result = await trio.run_process(
        ["nghttp", "-nv", f"{base}/", f"{base}/big.bin"], capture_stdout=True, capture_stderr=True, check=False
    )
    out = result.stdout.decode(errors="replace")
    assert result.returncode == 0, out + result.stderr.decode(errors="replace")
    assert "h2 selected" in out or "The negotiated protocol: h2" in out
    assert out.count(":status: 200") == 2
    assert "SETTINGS_ENABLE_CONNECT_PROTOCOL(0x08):1" in out
    assert "SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100" in out
    # nghttp prints the body length it received per stream with -s; check the DATA end instead.
    assert "END_STREAM" in out
    body = await trio.run_process(["nghttp", f"{base}/big.bin"], capture_stdout=True, check=True)
    assert body.stdout == bytes(range(256)) * 4096


@pytest.mark.skipif(shutil.which("nghttp") is None, reason="nghttp (nghttp2-client) is not installed")
async def test_nghttp_h2c_prior_knowledge(nursery: trio.Nursery, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"plain h2\n")
    server = await echo_h2_server(nursery, tmp_path)
    result = await trio.run_process(
        ["nghttp", f"http://127.0.0.1:{server.port}/a.txt"], capture_stdout=True, capture_stderr=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"plain h2\n"


# ---------------------------------------------------------------------------
# serve_h2 on memory streams, with the autojump clock: timers and shutdown.
# ---------------------------------------------------------------------------


async def _memory_h2(
    nursery: trio.Nursery, config: wstrio.ServerConfig
) -> tuple[trio.abc.Stream, trio.CancelScope, trio.Event]:
    """serve_h2 on one end of a memory stream pair; returns the client end, its scope and a done event."""
    client_end, server_end = trio.testing.memory_stream_pair()
    context = ServerContext(config, SocketConnector())
    scope = trio.CancelScope()
    done = trio.Event()

    async def run() -> None:
        with scope:
            await serve_h2(server_end, config, context.dispatch, scheme="http")
        await server_end.aclose()
        done.set()

    nursery.start_soon(run)
    return client_end, scope, done


async def test_idle_connection_gets_goaway(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    config = make_config({"server": {"max-keep-alive-idle": 5, "max-read-idle": 60}})
    client_end, _, done = await _memory_h2(nursery, config)
    async with run_h2_client(client_end) as client:
        await client.settings_received.wait()
        start = trio.current_time()
        with trio.fail_after(120):
            await done.wait()
        # No request yet: max-read-idle applies.
        assert 59 <= trio.current_time() - start <= 61
        assert client.goaway is not None
        assert client.goaway.error_code == ErrorCodes.NO_ERROR


async def test_keep_alive_idle_after_a_request(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    (tmp_path / "x").write_bytes(b"x")
    config = make_config({"server": {"max-keep-alive-idle": 5, "document-root": str(tmp_path)}})
    client_end, _, done = await _memory_h2(nursery, config)
    async with run_h2_client(client_end) as client:
        status, _, _ = await client.get("/x", scheme="http")
        assert status == 200
        start = trio.current_time()
        with trio.fail_after(120):
            await done.wait()
        assert 4 <= trio.current_time() - start <= 6


async def test_shutdown_with_no_streams_is_quick(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    client_end, scope, done = await _memory_h2(nursery, make_config({}))
    async with run_h2_client(client_end) as client:
        await client.settings_received.wait()
        start = trio.current_time()
        scope.cancel()
        await done.wait()
        assert trio.current_time() - start < 1
        with trio.fail_after(1):
            await client.goaway_event.wait()


async def test_access_log_shows_http2_and_the_wire_method(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "wstrio.access")
    server = await echo_h2_server(nursery)
    async with open_h2_client("127.0.0.1", server.port) as client:
        ws = await client.websocket("/ws/", scheme="http")
        await ws.close()
        await client.ping()
        # The stream's log line is written before the server answers the next PING.
        await client.ping()
    assert any("CONNECT /ws/ HTTP/2" in r.getMessage() for r in caplog.records)


async def _memory_server(nursery: trio.Nursery, **server: Any) -> tuple[MemoryListener, trio.CancelScope, trio.Event]:
    """The whole server on a memory listener with an echo backend; returns it, its scope, and 'stopped'."""
    route = {"path": "/ws/", "handler": "wstunnel", "backend": [{"host": "10.0.0.1", "port": 1}]}
    config = make_config({"server": server, "route": [route]})
    listener = MemoryListener()

    async def echo(stream: trio.abc.Stream) -> None:
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError):
                async for chunk in stream:
                    await stream.send_all(chunk)

    connector = MemoryConnector(nursery, echo)
    scope = trio.CancelScope()
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[wstrio.Server]) -> None:
        with scope:
            await wstrio.serve_listeners(config, [listener], connector=connector, task_status=task_status)
        stopped.set()

    await nursery.start(run)
    return listener, scope, stopped


@pytest.mark.parametrize("client_answers", [True, False], ids=["client-answers", "client-silent"])
async def test_shutdown_close_is_bounded_by_shutdown_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, client_answers: bool
) -> None:
    listener, scope, stopped = await _memory_server(nursery, **{"shutdown-timeout": 10})
    async with run_h2_client(await listener.connect()) as client:
        ws = await client.websocket("/ws/", scheme="http")
        await ws.send_text("hi")
        assert await ws.receive_message() == "hi"
        start = trio.current_time()
        scope.cancel()
        await client.goaway_event.wait()
        with pytest.raises(EOFError):
            await ws.receive_message()
        assert ws.closed is not None
        assert ws.closed.code == 1001
        # GOAWAY first, then the tunnel's CLOSE frame.
        goaway_at = next(i for i, e in enumerate(client.events) if isinstance(e, h2.events.ConnectionTerminated))
        close_at = next(
            i
            for i, e in enumerate(client.events)
            if isinstance(e, h2.events.DataReceived) and (e.data or b"")[:1] == b"\x88"  # FIN + CLOSE opcode
        )
        assert goaway_at < close_at
        if client_answers:
            await ws.stream.send(ws.ws.send(ws.closed.response()))
        await stopped.wait()
        elapsed = trio.current_time() - start
        if client_answers:
            assert elapsed < 1
        else:
            assert 10 <= elapsed < 20


async def _wsproto_echo_backend(stream: trio.SocketStream) -> None:
    """An HTTP/1.1 WebSocket echo server (wsproto): what a proxy route passes upgrades to."""
    ws = WSConnection(ConnectionType.SERVER)
    with contextlib.suppress(trio.BrokenResourceError):
        while data := await stream.receive_some(65536):
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, WsRequest):
                    await stream.send_all(ws.send(AcceptConnection(extra_headers=[(b"x-backend", b"h1")])))
                elif isinstance(event, TextMessage):
                    await stream.send_all(ws.send(Message(data=event.data, message_finished=event.message_finished)))
                elif isinstance(event, BytesMessage):
                    data = bytes(event.data)
                    await stream.send_all(ws.send(Message(data=data, message_finished=event.message_finished)))
                elif isinstance(event, CloseConnection):
                    await stream.send_all(ws.send(event.response()))
                    return


async def test_websocket_through_a_proxy_route_to_an_http11_backend(nursery: trio.Nursery) -> None:
    # The h2 client's extended CONNECT becomes an HTTP/1.1 Upgrade towards the
    # backend; its 101 becomes our 200 (with its own headers, minus the
    # HTTP/1.1-only ones).
    port = await serve_tcp_backend(nursery, _wsproto_echo_backend)
    route = {"path": "/", "handler": "proxy", "upgrade": True, "backend": [{"host": "127.0.0.1", "port": port}]}
    server = await start_server(nursery, {"route": [route]})
    async with open_h2_client("127.0.0.1", server.port) as client:
        sockets = [await client.websocket("/chat", scheme="http") for _ in range(3)]
        for ws in sockets:
            assert ws.stream.header(b"x-backend") == b"h1"
            assert ws.stream.header(b"sec-websocket-accept") is None
            assert ws.stream.header(b"upgrade") is None
        for i, ws in enumerate(sockets):
            await ws.send_text(f"via proxy {i}")
        for i, ws in enumerate(sockets):
            assert await ws.receive_message() == f"via proxy {i}"
        big = bytes(range(256)) * 1024
        await sockets[0].send_bytes(big)
        assert await sockets[0].receive_message() == big
        for ws in sockets:
            assert (await ws.close()).code == 1000


async def test_websocket_through_a_cgi_route(nursery: trio.Nursery, tmp_path: Path) -> None:
    # The seed's ws_echo.py (its masking and close code fixed, for a strict
    # client) answers "Status: 101"; the client sees a 200 and its frames.
    www = make_docroot(tmp_path)
    route = {"path": "/ws/", "handler": "cgi", "assign": {"": ""}, "upgrade": True}
    server = await start_server(nursery, {"server": {"document-root": str(www)}, "route": [route]})
    async with open_h2_client("127.0.0.1", server.port) as client:
        # (The script needs an Origin, as browsers send.)
        ws = await client.websocket("/ws/ws_echo_fixed.py", [(b"origin", b"http://localhost")], scheme="http")
        assert ws.stream.header(b"upgrade") is None
        await ws.send_text("hello cgi")
        assert await ws.receive_message() == "hello cgi"
        await ws.send_bytes(b"binary \x01\x02")
        assert await ws.receive_message() == b"binary \x01\x02"
        assert (await ws.close()).code == 1000


@pytest.mark.parametrize("handler", ["scgi", "fastcgi"])
async def test_websocket_through_scgi_and_fastcgi_routes(nursery: trio.Nursery, tmp_path: Path, handler: str) -> None:
    # lighttpd hangs here (or answers 411): the stream's length is unknown.
    # wstrio treats the stream as an upgraded request and it just works.
    www = make_docroot(tmp_path)
    program = SCGI_CGI if handler == "scgi" else FCGI_CGI
    backend = {"socket": str(tmp_path / f"{handler}.sock"), "bin-path": str(program), "max-procs": 1, "min-procs": 1}
    route = {"path": "/ws/", "handler": handler, "upgrade": True, "backend": [backend]}
    server = await start_server(nursery, {"server": {"document-root": str(www)}, "route": [route]})
    async with open_h2_client("127.0.0.1", server.port) as client:
        ws = await client.websocket("/ws/ws_echo_fixed.py", [(b"origin", b"http://localhost")], scheme="http")
        await ws.send_text(f"hello {handler}")
        assert await ws.receive_message() == f"hello {handler}"
        assert (await ws.close()).code == 1000


async def test_rapid_resets_leave_the_connection_usable(nursery: trio.Nursery) -> None:
    # Open-and-reset as fast as possible ("rapid reset"): the stream tasks
    # end, the limit on tasks holds, and the connection still works — within
    # the flood budget (each costs two units of its burst of 500; beyond it
    # the connection ends with ENHANCE_YOUR_CALM: tests/integration/test_h2_floods.py).
    server = await echo_h2_server(nursery, **{"h2-max-concurrent-streams": 10})
    async with open_h2_client("127.0.0.1", server.port) as client:
        await client.settings_received.wait()
        for _ in range(200):
            stream = await client.open_websocket_stream("/ws/", scheme="http")
            await stream.reset(ErrorCodes.CANCEL)
        await client.ping()
        ws = await client.websocket("/ws/", scheme="http")
        await ws.send_text("still fine")
        assert await ws.receive_message() == "still fine"
        assert (await ws.close()).code == 1000
        assert client.goaway is None
