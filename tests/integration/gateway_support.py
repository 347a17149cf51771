"""Helpers shared by the CGI, SCGI and FastCGI integration tests.

* :func:`make_docroot` builds a document root with the test scripts of
  ``tests/data/cgi`` under ``/cgi/`` and the seed's ``ws_echo.py`` (verbatim,
  from ``examples/cgi``) under ``/ws/``.
* :func:`http_request` is an independent HTTP/1.1 client (``http.client``
  in a worker thread).
* :func:`check_seed_ws_echo` drives the seed's ``ws_echo.py`` with a raw
  client that tolerates what the seed does wrong (it masks its frames and
  closes with the ASCII text ``"1000"``).
* :class:`FakeExchange` stands in for an HTTP/2 stream, to run the HTTP/2
  extended-CONNECT paths before wstrio speaks HTTP/2.
"""

from __future__ import annotations

import functools
import http.client
import shutil
import struct
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio
import trio.testing

from tests.helpers import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RAW_TIMEOUT,
    RawClient,
    client_frame,
    start_server,
    ws_connect,
)
from wstrio import load_config
from wstrio._config import ListenAddress, ServerConfig
from wstrio._io.backends.connect import SocketConnector
from wstrio._io.context import ServerContext
from wstrio._io.http.exchange import Upgraded
from wstrio._sansio.http.request import Request

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data" / "cgi"
EXAMPLES = HERE.parents[1] / "examples"
SEED_WS_ECHO = EXAMPLES / "cgi" / "www" / "ws" / "ws_echo.py"
SEED_WS_ECHO_HTML = EXAMPLES / "cgi" / "www" / "ws_echo.html"
SCGI_CGI = EXAMPLES / "scgi" / "scgi_cgi.py"
FCGI_CGI = EXAMPLES / "fastcgi" / "fcgi_cgi.py"


def fixed_ws_echo_source() -> str:
    """The seed's ``ws_echo.py`` with its two protocol errors fixed, for strict clients.

    Server frames go out unmasked (RFC 6455 section 5.1) and CLOSE carries
    the code 1000 as two bytes instead of the text ``"1000"``.
    """
    source = SEED_WS_ECHO.read_text()
    masked = "opcode=opcode, fin=fin, masking_key=masking_key)"
    assert source.count(masked) == 1
    assert source.count("b'1000'") == 2
    return source.replace(masked, "opcode=opcode, fin=fin)").replace("b'1000'", "struct.pack('!H', 1000)")


def make_docroot(tmp_path: Path) -> Path:
    """``tmp_path/www`` with ``cgi/`` (the test scripts) and ``ws/`` (the seed's ws_echo.py and a fixed copy)."""
    www = tmp_path / "www"
    cgi = www / "cgi"
    cgi.mkdir(parents=True)
    for script in DATA.iterdir():
        target = cgi / script.name
        shutil.copyfile(script, target)
        target.chmod(0o755)
    ws = www / "ws"
    ws.mkdir()
    shutil.copyfile(SEED_WS_ECHO, ws / "ws_echo.py")
    (ws / "ws_echo.py").chmod(0o755)
    (ws / "ws_echo_fixed.py").write_text(fixed_ws_echo_source())
    (ws / "ws_echo_fixed.py").chmod(0o755)
    (www / "index.html").write_text("<p>static index</p>\n")
    return www


@attrs.frozen
class HttpResponse:
    """A response read by :func:`http_request` (header names lower-cased)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower-case), or ``None``."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


def _http_request(
    port: int, method: str, path: str, body: bytes | None, headers: Sequence[tuple[str, str]], chunked: bool
) -> HttpResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=RAW_TIMEOUT)
    try:
        send_body: object = body
        if chunked and body is not None:
            send_body = iter([body[: len(body) // 2], body[len(body) // 2 :]])
        conn.request(method, path, body=send_body, headers=dict(headers), encode_chunked=chunked)  # type: ignore[arg-type]
        response = conn.getresponse()
        data = response.read()
        return HttpResponse(response.status, tuple((k.lower(), v) for k, v in response.getheaders()), data)
    finally:
        conn.close()


async def http_request(
    port: int,
    method: str = "GET",
    path: str = "/",
    *,
    body: bytes | None = None,
    headers: Sequence[tuple[str, str]] = (),
    chunked: bool = False,
) -> HttpResponse:
    """One request with :mod:`http.client` (which follows no redirect and decodes chunked bodies)."""
    if chunked:
        headers = [*headers, ("Transfer-Encoding", "chunked")]
    return await trio.to_thread.run_sync(
        functools.partial(_http_request, port, method, path, body, headers, chunked), abandon_on_cancel=True
    )


def websockets_echo(url: str) -> tuple[str, bytes, bool]:
    """Text, binary and ping with the ``websockets`` client (run it with :func:`ws_client`)."""
    with ws_connect(url, origin="http://localhost") as ws:
        ws.send("hello websockets")
        text = ws.recv(timeout=10)
        ws.send(b"binary \x01\x02")
        data = ws.recv(timeout=10)
        pong = ws.ping(b"p").wait(10)
        assert isinstance(text, str)
        assert isinstance(data, bytes)
        return text, data, pong


async def check_seed_ws_echo(client: RawClient) -> None:
    """Text, binary and ping through the seed's ``ws_echo.py``, then its (odd) CLOSE.

    The seed echoes each frame masked with the client's own key (a client
    must reject that; :meth:`RawClient.read_frame` unmasks it) and turns every
    payload byte into ``chr(b).encode()``, so only ASCII survives the trip;
    the binary message is ASCII for that reason.
    """
    await client.send(client_frame(OP_TEXT, b"hello seed"))
    frame = await client.read_frame()
    assert (frame.opcode, frame.payload, frame.masked) == (OP_TEXT, b"hello seed", True)
    await client.send(client_frame(OP_BINARY, bytes(range(32, 127))))
    frame = await client.read_frame()
    assert (frame.opcode, frame.payload) == (OP_BINARY, bytes(range(32, 127)))
    await client.send(client_frame(OP_PING, b"are you there"))
    frame = await client.read_frame()
    assert (frame.opcode, frame.payload) == (OP_PONG, b"are you there")
    # A 16-bit length.  (Not bigger: the seed reads each frame with one
    # unbuffered read(), which a pipe answers with at most 64 KiB.)
    big = b"x" * 3000
    await client.send(client_frame(OP_TEXT, big))
    frame = await client.read_frame()
    assert frame.payload == big
    await client.send(client_frame(OP_CLOSE, struct.pack("!H", 1000)))
    frame = await client.read_frame()
    # Not a close code: the ASCII text "1000" (0x3130 = 12592 as a code).
    assert (frame.opcode, frame.payload) == (OP_CLOSE, b"1000")
    assert await client.read_to_eof() == b""


@attrs.define(eq=False)
class FakeExchange:
    """An exchange whose request is anything, e.g. an HTTP/2 extended CONNECT.

    Responses are recorded; :meth:`upgrade` hands back one end of a memory
    stream pair and keeps the other as :attr:`peer` for the test.
    """

    request: Request
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = attrs.Factory(list)
    body: bytearray = attrs.Factory(bytearray)
    ended: bool = False
    note: str = ""
    peer: trio.StapledStream[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream] | None = None
    upgraded: trio.Event = attrs.Factory(trio.Event)

    async def receive_body(self, max_bytes: int = 65536) -> bytes:
        await trio.lowlevel.checkpoint()
        return b""

    async def start_response(self, status: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
        await trio.lowlevel.checkpoint()
        self.status = status
        self.headers = list(headers)

    async def send_data(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.body += data

    async def end_response(self) -> None:
        await trio.lowlevel.checkpoint()
        self.ended = True

    async def upgrade(self, headers: Sequence[tuple[bytes, bytes]], *, status: int = 101) -> Upgraded:
        await trio.lowlevel.checkpoint()
        self.status = status
        self.headers = list(headers)
        ours, self.peer = trio.testing.memory_stream_pair()
        self.upgraded.set()
        return Upgraded(ours)

    @property
    def response_started(self) -> bool:
        return self.status is not None

    def set_log_note(self, note: str) -> None:
        self.note = note

    def set_log_fields(self, **fields: object) -> None:
        pass

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


def h2_websocket_request(path: str, *, port: int = 443, host: str = "localhost") -> Request:
    """The request an HTTP/2 extended CONNECT (``:protocol websocket``) becomes."""
    return Request(
        method="GET",
        target=path.encode(),
        path=path.partition("?")[0],
        query=path.partition("?")[2],
        headers=((b"host", host.encode()), (b"origin", f"https://{host}".encode()), (b"sec-websocket-version", b"13")),
        http_version="2",
        scheme="https",
        client=("127.0.0.1", 50000),
        server=("127.0.0.1", port),
        websocket=True,
        upgrade=b"websocket",
    )


async def start_context(nursery: trio.Nursery, config: ServerConfig) -> ServerContext:
    """A server's dispatcher without listeners, its backends (spawned pools) running in ``nursery``."""
    context = ServerContext(config, SocketConnector())
    for backends in context.backends.values():
        await backends.start(nursery)
    return context


async def h2_seed_session(context: ServerContext, path: str) -> FakeExchange:
    """The seed's ws_echo.py at ``path`` over a stand-in HTTP/2 extended CONNECT; returns the exchange."""
    exchange = FakeExchange(h2_websocket_request(path))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(context.dispatch, exchange)
        with trio.fail_after(RAW_TIMEOUT):
            await exchange.upgraded.wait()
        assert exchange.status == 200
        names = {name for name, _ in exchange.headers}
        assert not names & {b"upgrade", b"connection", b"sec-websocket-accept"}
        assert exchange.peer is not None
        await check_seed_ws_echo(RawClient(exchange.peer))
        await exchange.peer.send_eof()  # the relay ends once both sides did
    return exchange


def example_config(name: str, tmp_path: Path) -> ServerConfig:
    """``examples/<name>/wstrio.toml`` as shipped, but on port 0 and with backend sockets under ``tmp_path``."""
    config = load_config(EXAMPLES / name / "wstrio.toml")
    routes = tuple(
        attrs.evolve(
            route,
            backends=tuple(
                attrs.evolve(b, socket=tmp_path / b.socket.name) if b.socket is not None else b for b in route.backends
            ),
        )
        for route in config.routes
    )
    return attrs.evolve(config, listen=(ListenAddress("tcp", "127.0.0.1", 0),), routes=routes)


async def check_example(nursery: trio.Nursery, name: str, tmp_path: Path) -> None:
    """Run ``examples/<name>/wstrio.toml``: the pages are served and the seed's ws_echo.py echoes."""
    server = await start_server(nursery, example_config(name, tmp_path))
    for page in ("ws_echo.html", "ws_echo_anyport.html"):
        response = await http_request(server.port, "GET", f"/{page}")
        assert response.status == 200
        assert response.header("content-type") == "text/html; charset=utf-8"
    client = await RawClient.tcp(server.port)
    head = await client.ws_handshake("/ws/ws_echo.py", headers=[("Origin", "http://localhost")])
    assert head.status == 101
    await check_seed_ws_echo(client)
    await client.aclose()
