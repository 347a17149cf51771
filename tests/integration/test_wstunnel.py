"""wstunnel end to end: real sockets, the ``websockets`` client, raw frames.

The independent client is ``websockets`` (sync, in a worker thread); where a
test needs bytes no well-behaved client sends (bad handshakes, data and CLOSE
in one write, protocol errors) it uses :class:`tests.helpers.RawClient`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import struct
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

import wstrio
from tests.helpers import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    WS_ACCEPT,
    Frame,
    RawClient,
    RawClients,
    client_close_frame,
    client_frame,
    echo_route,
    handshake_request,
    has_ipv6_loopback,
    make_config,
    serve_echo_tcp,
    serve_echo_unix,
    serve_tcp_backend,
    start_server,
    unused_tcp_port,
    ws_client,
    ws_connect,
    ws_receive_bytes,
)
from wstrio._io.backends.connect import SocketConnector
from wstrio._sansio.backends.address import BackendAddress

MiB = 1 << 20

# Every tunnel and relay runs with the hub on and off (issue 13, defect 7).
pytestmark = pytest.mark.usefixtures("hub_switch")


async def start(nursery: trio.Nursery, data: dict[str, Any], **kwargs: Any) -> wstrio.Server:
    """:func:`start_server` with a short ``shutdown-timeout``.

    When a test ends, its nursery (and the server in it) is cancelled while
    raw clients may still be connected; a server shutting down waits up to
    ``shutdown-timeout`` for each client's CLOSE.
    """
    server_section = {"shutdown-timeout": 0.25, **data.get("server", {})}
    return await start_server(nursery, {**data, "server": server_section}, **kwargs)


async def echo_server(nursery: trio.Nursery, **route: Any) -> wstrio.Server:
    """wstrio with one wstunnel route ``/ws/`` to a TCP echo backend."""
    port = await serve_echo_tcp(nursery)
    return await start(nursery, {"route": [echo_route(port, **route)]})


async def read_data(client: RawClient, n: int) -> tuple[bytes, list[Frame]]:
    """Read frames until ``n`` bytes of data payload arrived; returns (data, every frame read)."""
    frames = []
    data = b""
    while len(data) < n:
        frame = await client.read_frame()
        frames.append(frame)
        assert frame.opcode != OP_CLOSE, f"CLOSE {frame.close_code} after {data!r}"
        if frame.opcode in (OP_TEXT, OP_BINARY, OP_CONTINUATION):
            data += frame.payload
    return data, frames


async def open_tunnel(raw: RawClients, server: wstrio.Server, path: str = "/ws/", **kwargs: Any) -> RawClient:
    client = await raw.tcp(server.port)
    head = await client.ws_handshake(path, **kwargs)
    assert head.status == 101, head
    return client


# --------------------------------------------------------------------------
# Tunnelling
# --------------------------------------------------------------------------


async def test_text_route_sends_backend_bytes_as_text_frames(nursery: trio.Nursery) -> None:
    server = await echo_server(nursery)

    def client(url: str) -> list[list[str | bytes]]:
        with ws_connect(url) as ws:
            ws.send("héllo wörld ✓")
            first = ws_receive_bytes(ws, len("héllo wörld ✓".encode()))
            ws.send(b"binary in")  # the client's frame type does not matter
            second = ws_receive_bytes(ws, len(b"binary in"))
            return [first, second]

    first, second = await ws_client(client, server.url("/ws/", scheme="ws"))
    assert all(isinstance(m, str) for m in first + second)
    assert "".join(map(str, first)) == "héllo wörld ✓"
    assert "".join(map(str, second)) == "binary in"


async def test_binary_route_sends_backend_bytes_as_binary_frames(nursery: trio.Nursery) -> None:
    server = await echo_server(nursery, **{"frame-type": "binary"})
    payload = bytes(range(256)) * 8

    def client(url: str) -> list[list[str | bytes]]:
        with ws_connect(url) as ws:
            ws.send(payload)
            first = ws_receive_bytes(ws, len(payload))
            ws.send("text in")
            second = ws_receive_bytes(ws, len(b"text in"))
            return [first, second]

    first, second = await ws_client(client, server.url("/ws/", scheme="ws"))
    assert all(isinstance(m, bytes) for m in first + second)
    assert b"".join(m for m in first if isinstance(m, bytes)) == payload
    assert b"".join(m for m in second if isinstance(m, bytes)) == b"text in"


async def store_and_echo_server(nursery: trio.Nursery, size: int, **route: Any) -> tuple[wstrio.Server, list[str]]:
    """wstrio to a backend that reads ``size`` bytes, then echoes them all.

    Not a streaming echo: the websockets sync client holds its protocol lock
    while it writes a frame, so it cannot read while it sends one large
    message, and a streaming echo of 16 MiB would deadlock the *client*.
    The list receives the sha256 of what the backend got.
    """
    digests: list[str] = []

    async def store_and_echo(stream: trio.SocketStream) -> None:
        data = bytearray()
        while len(data) < size and (chunk := await stream.receive_some(1 << 20)):
            data += chunk
        digests.append(hashlib.sha256(data).hexdigest())
        await stream.send_all(bytes(data))

    port = await serve_tcp_backend(nursery, store_and_echo)
    return await start(nursery, {"route": [echo_route(port, **route)]}), digests


@pytest.mark.slow
async def test_16_mib_binary_message_passes_intact(nursery: trio.Nursery) -> None:
    payload = os.urandom(16 * MiB)
    expected = hashlib.sha256(payload).hexdigest()
    server, backend_digests = await store_and_echo_server(nursery, len(payload), **{"frame-type": "binary"})

    def client(url: str) -> tuple[str, int, bool]:
        with ws_connect(url) as ws:
            ws.send(payload)  # one 16 MiB frame
            received = ws_receive_bytes(ws, len(payload), timeout=60)
            data = b"".join(m for m in received if isinstance(m, bytes))
            return hashlib.sha256(data).hexdigest(), len(data), all(isinstance(m, bytes) for m in received)

    digest, size, all_binary = await ws_client(client, server.url("/ws/", scheme="ws"))
    assert backend_digests == [expected]
    assert all_binary
    assert size == len(payload)
    assert digest == expected


@pytest.mark.slow
async def test_16_mib_text_message_arrives_as_valid_utf8(nursery: trio.Nursery) -> None:
    # 1-, 2-, 3- and 4-byte characters: the backend's 64 KiB reads cut
    # sequences, and every text frame must still be valid UTF-8 (websockets
    # fails the connection with 1007 otherwise).
    unit = "aé€😀"
    text = unit * ((16 * MiB) // len(unit.encode()) + 1)
    encoded = text.encode()
    expected = hashlib.sha256(encoded).hexdigest()
    server, backend_digests = await store_and_echo_server(nursery, len(encoded))

    def client(url: str) -> tuple[str, bool]:
        with ws_connect(url) as ws:
            ws.send(text)
            received = ws_receive_bytes(ws, len(encoded), timeout=60)
            joined = "".join(m for m in received if isinstance(m, str))
            return hashlib.sha256(joined.encode()).hexdigest(), all(isinstance(m, str) for m in received)

    digest, all_text = await ws_client(client, server.url("/ws/", scheme="ws"))
    assert backend_digests == [expected]
    assert all_text
    assert digest == expected


async def test_fragmented_client_messages_reach_the_backend_whole(nursery: trio.Nursery) -> None:
    server = await echo_server(nursery)

    def client(url: str) -> tuple[str, str]:
        with ws_connect(url) as ws:
            ws.send(["frag1-", "frag2-", "frag3"])  # a text message in three frames
            text = "".join(map(str, ws_receive_bytes(ws, len("frag1-frag2-frag3"))))
            ws.send([b"bin1-", b"bin2"])
            data = "".join(map(str, ws_receive_bytes(ws, len("bin1-bin2"))))
            return text, data

    assert await ws_client(client, server.url("/ws/", scheme="ws")) == ("frag1-frag2-frag3", "bin1-bin2")


async def test_ping_between_fragments_is_answered_and_data_kept(nursery: trio.Nursery, raw: RawClients) -> None:
    server = await echo_server(nursery)
    client = await open_tunnel(raw, server)
    await client.send(
        client_frame(OP_TEXT, b"abc", fin=False)
        + client_frame(OP_PING, b"p!")
        + client_frame(OP_CONTINUATION, b"def", fin=False)
        + client_frame(OP_CONTINUATION, b"ghi")
    )
    data, frames = await read_data(client, 9)
    if not any(f.opcode == OP_PONG for f in frames):
        frames.append(await client.read_frame())
    assert data == b"abcdefghi"
    assert [f.payload for f in frames if f.opcode == OP_PONG] == [b"p!"]
    assert not any(f.masked for f in frames)


async def test_pipelined_frames_in_the_handshake_write_are_delivered(nursery: trio.Nursery, raw: RawClients) -> None:
    server = await echo_server(nursery)
    client = await raw.tcp(server.port)
    await client.send(handshake_request() + client_frame(OP_TEXT, b"right behind the handshake"))
    head = await client.read_head()
    assert head.status == 101
    assert head.header(b"sec-websocket-accept") == WS_ACCEPT
    data, _ = await read_data(client, len(b"right behind the handshake"))
    assert data == b"right behind the handshake"


@pytest.mark.parametrize("with_handshake", [False, True], ids=["after-101", "same-write-as-handshake"])
async def test_data_in_the_same_write_as_close_reaches_the_backend(
    nursery: trio.Nursery, raw: RawClients, with_handshake: bool
) -> None:
    received: list[bytes] = []
    backend_eof = trio.Event()

    async def record(stream: trio.SocketStream) -> None:
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
        received.append(data)
        backend_eof.set()

    port = await serve_tcp_backend(nursery, record)
    server = await start(nursery, {"route": [echo_route(port)]})
    client = await raw.tcp(server.port)
    tail = client_frame(OP_TEXT, b"last ") + client_frame(OP_BINARY, b"words") + client_close_frame(4000, "bye")
    if with_handshake:
        await client.send(handshake_request() + tail)
        assert (await client.read_head()).status == 101
    else:
        assert (await client.ws_handshake()).status == 101
        await client.send(tail)
    frames = await client.read_frames_until_close()
    assert frames[-1].close_code == 1000
    await backend_eof.wait()
    assert received == [b"last words"]


# --------------------------------------------------------------------------
# Pings
# --------------------------------------------------------------------------


async def test_client_ping_gets_pong(nursery: trio.Nursery) -> None:
    server = await echo_server(nursery)

    def client(url: str) -> bool:
        with ws_connect(url, ping_interval=None) as ws:
            return ws.ping(b"are you there").wait(10)

    assert await ws_client(client, server.url("/ws/", scheme="ws"))


class _PingCounter(logging.Handler):
    def __init__(self, wanted: int) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0
        self.wanted = wanted
        self.enough = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("< PING"):
            self.count += 1
            if self.count >= self.wanted:
                self.enough.set()


async def test_server_pings_are_answered_by_the_client(nursery: trio.Nursery) -> None:
    server = await echo_server(nursery, **{"ping-interval": 0.2, "pong-timeout": 10})
    counter = _PingCounter(wanted=3)
    logger = logging.Logger("tests.ws-client", logging.DEBUG)
    logger.addHandler(counter)

    def client(url: str) -> tuple[bool, str]:
        with ws_connect(url, ping_interval=None, logger=logger) as ws:
            saw_pings = counter.enough.wait(20)
            ws.send("still open")  # the server got its PONGs: the tunnel is alive
            return saw_pings, "".join(map(str, ws_receive_bytes(ws, len("still open"))))

    saw_pings, echo = await ws_client(client, server.url("/ws/", scheme="ws"))
    assert saw_pings, f"saw {counter.count} PINGs"
    assert echo == "still open"


async def test_unanswered_pings_end_the_tunnel_with_1011(nursery: trio.Nursery, raw: RawClients) -> None:
    server = await echo_server(nursery, **{"ping-interval": 0.2, "pong-timeout": 0.2})
    client = await open_tunnel(raw, server)
    frames = await client.read_frames_until_close()  # never answer the PINGs
    assert frames[0].opcode == OP_PING
    assert frames[-1].close_code == 1011


# --------------------------------------------------------------------------
# Close codes
# --------------------------------------------------------------------------


async def test_client_close_4000_is_answered_with_1000(nursery: trio.Nursery) -> None:
    server = await echo_server(nursery)

    def client(url: str) -> tuple[int | None, int | None]:
        with ws_connect(url) as ws:
            ws.send("hi")
            ws.recv(timeout=10)
            ws.close(4000, "client leaving")
            return (
                ws.protocol.close_sent.code if ws.protocol.close_sent else None,
                ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None,
            )

    sent, received = await ws_client(client, server.url("/ws/", scheme="ws"))
    assert (sent, received) == (4000, 1000)


async def test_backend_eof_sends_data_then_close_1001(nursery: trio.Nursery) -> None:
    async def say_bye(stream: trio.SocketStream) -> None:
        await stream.send_all(b"bye\n")

    port = await serve_tcp_backend(nursery, say_bye)
    server = await start(nursery, {"route": [echo_route(port)]})

    def client(url: str) -> tuple[list[str | bytes], int | None]:
        messages: list[str | bytes] = []
        with ws_connect(url) as ws:
            try:
                while True:
                    messages.append(ws.recv(timeout=10))
            except ConnectionClosed as exc:
                return messages, exc.rcvd.code if exc.rcvd else None

    messages, code = await ws_client(client, server.url("/ws/", scheme="ws"))
    assert "".join(map(str, messages)) == "bye\n"
    assert code == 1001


async def test_backend_reset_sends_close_1011(nursery: trio.Nursery, raw: RawClients) -> None:
    async def reset(stream: trio.SocketStream) -> None:
        await stream.receive_some(100)  # the client's first message
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    port = await serve_tcp_backend(nursery, reset)
    server = await start(nursery, {"route": [echo_route(port)]})
    client = await open_tunnel(raw, server)
    await client.send(client_frame(OP_TEXT, b"hello"))
    frames = await client.read_frames_until_close()
    assert frames[-1].close_code == 1011


async def test_client_half_close_lets_the_backend_finish(nursery: trio.Nursery, raw: RawClients) -> None:
    # TCP EOF without a CLOSE frame: the backend gets EOF, answers, closes;
    # the client still receives the answer and CLOSE 1001.
    server = await echo_server(nursery)
    client = await open_tunnel(raw, server)
    await client.send(client_frame(OP_TEXT, b"half"))
    await client.send_eof()
    frames = await client.read_frames_until_close()
    assert b"".join(f.payload for f in frames if f.opcode == OP_TEXT) == b"half"
    assert frames[-1].close_code == 1001


async def test_silent_client_gets_close_1001_on_idle_timeout(nursery: trio.Nursery, raw: RawClients) -> None:
    port = await serve_echo_tcp(nursery)
    server = await start(nursery, {"server": {"max-read-idle": 0.3}, "route": [echo_route(port)]})
    client = await open_tunnel(raw, server)
    frames = await client.read_frames_until_close()
    assert frames[-1].close_code == 1001


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param(b"\x81\x05hello", 1002, id="unmasked-frame"),
        pytest.param(client_frame(OP_PING, b"x" * 126), 1002, id="ping-over-125-bytes"),
        pytest.param(client_frame(OP_PING, b"x", fin=False), 1002, id="fragmented-ping"),
        pytest.param(client_frame(0x3, b"x"), 1002, id="reserved-opcode"),
        pytest.param(client_frame(OP_CONTINUATION, b"x"), 1002, id="continuation-first"),
        pytest.param(client_frame(OP_TEXT, b"\xff\xfe"), 1007, id="invalid-utf8-text"),
    ],
)
async def test_protocol_errors_close_the_tunnel(
    nursery: trio.Nursery, raw: RawClients, frame: bytes, code: int
) -> None:
    server = await echo_server(nursery)
    client = await open_tunnel(raw, server)
    await client.send(frame)
    frames = await client.read_frames_until_close()
    assert frames[-1].close_code == code
    assert not any(f.opcode in (OP_TEXT, OP_BINARY) for f in frames)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        pytest.param({"max-frame-size": 1000}, b"x" * 1001, id="frame"),
        pytest.param({"max-message-size": 1000}, [b"x" * 600, b"y" * 600], id="message-in-fragments"),
    ],
)
async def test_oversized_frames_and_messages_are_1009(
    nursery: trio.Nursery, limits: dict[str, int], message: bytes | list[bytes]
) -> None:
    server = await echo_server(nursery, **limits)

    def client(url: str) -> tuple[bytes, int | None]:
        with ws_connect(url, max_size=None) as ws:
            ws.send(b"a" * 1000)  # at the limit: passed on, echoed
            echoed = "".join(map(str, ws_receive_bytes(ws, 1000))).encode()  # text frames (frame-type)
            try:
                # The CLOSE may come while the second fragment is being sent:
                # then it is send() that reports it.
                ws.send(message)
                while True:
                    ws.recv(timeout=10)
            except ConnectionClosed as exc:
                return echoed, exc.rcvd.code if exc.rcvd else None

    echoed, code = await ws_client(client, server.url("/ws/", scheme="ws"))
    assert echoed == b"a" * 1000
    assert code == 1009


async def test_frame_size_limits_are_wstunnel_keys_in_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        '[[route]]\npath = "/p/"\nhandler = "proxy"\nmax-frame-size = 10\n'
        '[[route.backend]]\nhost = "127.0.0.1"\nport = 1\n'
    )
    with pytest.raises(wstrio.ConfigError, match=r"bad.toml.*route\[0\]\.max-frame-size.*only applies to wstunnel"):
        wstrio.load_config(cfg)


# --------------------------------------------------------------------------
# Text frames and UTF-8
# --------------------------------------------------------------------------


async def test_utf8_split_by_backend_arrives_as_valid_text(nursery: trio.Nursery) -> None:
    async def split_writer(stream: trio.SocketStream) -> None:
        for piece in (b"caf\xc3", b"\xa9 ", b"\xf0\x9f", b"\x98", b"\x80!"):
            await stream.send_all(piece)
            await trio.sleep(0.05)  # separate TCP segments, so wstrio reads them apart

    port = await serve_tcp_backend(nursery, split_writer)
    server = await start(nursery, {"route": [echo_route(port)]})

    def client(url: str) -> tuple[list[str | bytes], int | None]:
        messages: list[str | bytes] = []
        with ws_connect(url) as ws:
            try:
                while True:
                    messages.append(ws.recv(timeout=10))
            except ConnectionClosed as exc:
                return messages, exc.rcvd.code if exc.rcvd else None

    messages, code = await ws_client(client, server.url("/ws/", scheme="ws"))
    assert all(isinstance(m, str) for m in messages)
    assert "".join(map(str, messages)) == "café 😀!"
    assert code == 1001  # not 1007: every frame was valid UTF-8


async def test_invalid_utf8_from_backend_is_replaced_not_fatal(nursery: trio.Nursery, raw: RawClients) -> None:
    async def latin1(stream: trio.SocketStream) -> None:
        await stream.send_all(b"caf\xe9 \xff!")

    port = await serve_tcp_backend(nursery, latin1)
    server = await start(nursery, {"route": [echo_route(port)]})
    client = await open_tunnel(raw, server)
    frames = await client.read_frames_until_close()
    assert b"".join(f.payload for f in frames if f.opcode == OP_TEXT).decode() == "caf\ufffd \ufffd!"
    assert frames[-1].close_code == 1001


# --------------------------------------------------------------------------
# Handshake
# --------------------------------------------------------------------------


async def test_backend_down_is_503_and_never_101(nursery: trio.Nursery, raw: RawClients) -> None:
    route = echo_route(unused_tcp_port())
    route["backend"][0]["connect-timeout"] = 5
    server = await start(nursery, {"route": [route]})

    def client(url: str) -> int:
        with pytest.raises(InvalidStatus) as info, ws_connect(url):
            pass
        return info.value.response.status_code

    assert await ws_client(client, server.url("/ws/", scheme="ws")) == 503

    conn = await raw.tcp(server.port)
    await conn.send(handshake_request())
    response = await conn.read_response()  # the first and only response: no 101 before it
    assert response.status == 503
    assert response.header(b"sec-websocket-accept") is None
    assert response.header(b"upgrade") is None


class GatedConnector:
    """Connects only once ``gate`` is set; ``entered`` tells that a connect began."""

    def __init__(self) -> None:
        self.entered = trio.Event()
        self.gate = trio.Event()
        self.inner = SocketConnector()

    async def connect(self, address: BackendAddress) -> trio.abc.Stream:
        self.entered.set()
        await self.gate.wait()
        return await self.inner.connect(address)


async def test_101_is_sent_only_after_the_backend_is_connected(nursery: trio.Nursery, raw: RawClients) -> None:
    port = await serve_echo_tcp(nursery)
    connector = GatedConnector()
    server = await start(nursery, {"route": [echo_route(port)]}, connector=connector)
    client = await raw.tcp(server.port)
    await client.send(handshake_request())
    await connector.entered.wait()
    assert await client.receive_within(0.3) is None, "answered before the backend was connected"
    connector.gate.set()
    assert (await client.read_head()).status == 101
    await client.send(client_frame(OP_TEXT, b"ok"))
    assert (await read_data(client, 2))[0] == b"ok"


async def test_origins_are_checked(nursery: trio.Nursery) -> None:
    server = await echo_server(nursery, origins=["http://good.example"])
    url = server.url("/ws/", scheme="ws")

    def refused(origin: str | None) -> int:
        with pytest.raises(InvalidStatus) as info, ws_connect(url, origin=origin):
            pass
        return info.value.response.status_code

    def accepted() -> str:
        with ws_connect(url, origin="http://good.example") as ws:
            ws.send("in")
            return "".join(map(str, ws_receive_bytes(ws, 2)))

    assert await ws_client(refused, None) == 400
    assert await ws_client(refused, "http://evil.example") == 403
    assert await ws_client(refused, "http://good.example.evil.example") == 403
    assert await ws_client(accepted) == "in"


@pytest.mark.parametrize("version", [b"8", b"14", None], ids=["v8", "v14", "missing"])
async def test_bad_version_is_400_naming_version_13(
    nursery: trio.Nursery, raw: RawClients, version: bytes | None
) -> None:
    server = await echo_server(nursery)
    client = await raw.tcp(server.port)
    response = await client.request(handshake_request(version=version))
    assert response.status == 400
    assert response.header(b"sec-websocket-version") == b"13"


@pytest.mark.parametrize(
    "key",
    [None, b"", b"dG9vIHNob3J0", b"not base64 at all!!!!!!!"],
    ids=["missing", "empty", "short", "garbage"],
)
async def test_missing_or_bad_key_is_400(nursery: trio.Nursery, raw: RawClients, key: bytes | None) -> None:
    server = await echo_server(nursery)
    client = await raw.tcp(server.port)
    response = await client.request(handshake_request(key=key))
    assert response.status == 400
    assert response.header(b"sec-websocket-accept") is None


@pytest.mark.parametrize(
    ("offered", "agreed", "kind"),
    [
        (["binary"], "binary", bytes),
        (["base64"], "base64", str),
        (["chat"], None, str),
        (["chat", "binary"], "binary", bytes),
        (["chat", "base64"], "base64", str),
    ],
)
async def test_subprotocols(nursery: trio.Nursery, offered: list[str], agreed: str | None, kind: type) -> None:
    server = await echo_server(nursery)  # a text route: "binary" switches it to binary frames

    def client(url: str) -> tuple[str | None, list[str | bytes]]:
        # websockets itself refuses a subprotocol it did not offer.
        with ws_connect(url, subprotocols=[Subprotocol(p) for p in offered]) as ws:
            ws.send("aGk=")
            return ws.subprotocol, ws_receive_bytes(ws, 4)

    subprotocol, messages = await ws_client(client, server.url("/ws/", scheme="ws"))
    assert subprotocol == agreed
    assert all(isinstance(m, kind) for m in messages)
    assert b"".join(m if isinstance(m, bytes) else m.encode() for m in messages) == b"aGk="


async def test_no_subprotocol_offered_none_answered(nursery: trio.Nursery, raw: RawClients) -> None:
    server = await echo_server(nursery, **{"frame-type": "binary"})
    client = await raw.tcp(server.port)
    head = await client.ws_handshake()
    assert head.status == 101
    assert head.header(b"sec-websocket-protocol") is None  # lighttpd 1.4.69 said "binary" here


@pytest.mark.parametrize(
    ("route", "path"),
    [
        ({"path": "/ws/"}, "/ws/anything?x=1"),
        ({"regex": "^/websockify"}, "/websockify"),
        ({"extensions": [".ws"]}, "/deep/er/chat.ws"),
    ],
    ids=["prefix", "regex", "extensions"],
)
async def test_routes_by_prefix_regex_and_extension(
    nursery: trio.Nursery, raw: RawClients, route: dict[str, Any], path: str
) -> None:
    port = await serve_echo_tcp(nursery)
    full = {"handler": "wstunnel", "backend": [{"host": "127.0.0.1", "port": port}], **route}
    server = await start(nursery, {"route": [full]})
    client = await open_tunnel(raw, server, path)
    await client.send(client_frame(OP_TEXT, b"routed"))
    assert (await read_data(client, 6))[0] == b"routed"
    other = await raw.tcp(server.port)
    response = await other.request(handshake_request("/elsewhere"))
    assert response.status == 404  # no route and no document-root


# --------------------------------------------------------------------------
# Backends and listeners
# --------------------------------------------------------------------------


async def test_unix_socket_backend(nursery: trio.Nursery, tmp_path: Path) -> None:
    path = await serve_echo_unix(nursery, tmp_path / "echo.sock")
    route = {"path": "/ws/", "handler": "wstunnel", "backend": [{"socket": str(path)}]}
    server = await start(nursery, {"route": [route]})

    def client(url: str) -> str:
        with ws_connect(url) as ws:
            ws.send("over unix")
            return "".join(map(str, ws_receive_bytes(ws, 9)))

    assert await ws_client(client, server.url("/ws/", scheme="ws")) == "over unix"


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")
async def test_ipv6_listener(nursery: trio.Nursery) -> None:
    port = await serve_echo_tcp(nursery)
    server = await start(nursery, {"server": {"listen": ["[::1]:0"]}, "route": [echo_route(port)]})
    assert server.addresses[0].host == "::1"
    url = server.url("/ws/", scheme="ws")
    assert url.startswith("ws://[::1]:")

    def client(url: str) -> str:
        with ws_connect(url) as ws:
            ws.send("over v6")
            return "".join(map(str, ws_receive_bytes(ws, 7)))

    assert await ws_client(client, url) == "over v6"


async def test_unix_socket_listener(raw: RawClients, tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "hello.txt").write_text("hello over unix\n")
    sock = tmp_path / "wstrio.sock"
    async with trio.open_nursery() as nursery:
        port = await serve_echo_tcp(nursery)
        config = {"server": {"listen": [f"unix:{sock}"], "document-root": str(www)}, "route": [echo_route(port)]}
        server = await start(nursery, config)
        assert server.addresses[0].kind == "unix"

        conn = await raw.unix(sock)
        response = await conn.request(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert (response.status, response.body) == (200, b"hello over unix\n")

        def client() -> str:
            with ws_connect("ws://localhost/ws/", unix_path=sock) as ws:
                ws.send("ws over unix")
                return "".join(map(str, ws_receive_bytes(ws, 12)))

        assert await ws_client(client) == "ws over unix"
        nursery.cancel_scope.cancel()
    assert not sock.exists(), "the listening socket file was left behind"


# --------------------------------------------------------------------------
# Lifecycle and isolation
# --------------------------------------------------------------------------


async def test_shutdown_sends_close_1001_and_stops_listening(nursery: trio.Nursery) -> None:
    backend_port = await serve_echo_tcp(nursery)
    config = make_config({"server": {"shutdown-timeout": 10}, "route": [echo_route(backend_port)]})
    server_scope = trio.CancelScope()  # cancelling it is what SIGTERM does in the CLI
    server_done = trio.Event()

    async def run_server(*, task_status: trio.TaskStatus[wstrio.Server] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with server_scope:
                await wstrio.serve(config, task_status=task_status)
        finally:
            server_done.set()

    server: wstrio.Server = await nursery.start(run_server)
    url = server.url("/ws/", scheme="ws")
    port = server.port

    def client() -> tuple[str, int | None]:
        with ws_connect(url) as ws:
            ws.send("before shutdown")
            echo = "".join(map(str, ws_receive_bytes(ws, len("before shutdown"))))
            trio.from_thread.run_sync(server_scope.cancel)
            try:
                ws.recv(timeout=15)
            except ConnectionClosed as exc:
                return echo, exc.rcvd.code if exc.rcvd else None
            return echo, -1

    echo, code = await ws_client(client)
    assert echo == "before shutdown"
    assert code == 1001
    await server_done.wait()
    with pytest.raises(OSError, match="connect"):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_max_connections_holds_the_next_client_until_one_ends(nursery: trio.Nursery, raw: RawClients) -> None:
    port = await serve_echo_tcp(nursery)
    server = await start(nursery, {"server": {"max-connections": 1}, "route": [echo_route(port)]})
    first = await open_tunnel(raw, server)
    second = await raw.tcp(server.port)  # the kernel completes the TCP handshake
    await second.send(handshake_request())
    assert await second.receive_within(0.5) is None, "served beyond max-connections"
    assert server.statistics().connections_total == 1
    await first.send(client_close_frame(1000))
    assert (await first.read_frames_until_close())[-1].close_code == 1000
    await first.aclose()
    assert (await second.read_head()).status == 101
    await second.send(client_frame(OP_TEXT, b"my turn"))
    assert (await read_data(second, 7))[0] == b"my turn"


async def test_bad_connections_never_disturb_a_good_tunnel(nursery: trio.Nursery, raw: RawClients) -> None:
    server = await echo_server(nursery)
    good = await open_tunnel(raw, server)
    await good.send(client_frame(OP_TEXT, b"part one, ", fin=False))
    assert (await read_data(good, 10))[0] == b"part one, "

    garbage = await raw.tcp(server.port)
    await garbage.send(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
    assert b"400" in (await garbage.read_to_eof())[:20]

    unmasked = await open_tunnel(raw, server)
    await unmasked.send(b"\x81\x03bad")
    assert (await unmasked.read_frames_until_close())[-1].close_code == 1002

    half_head = await raw.tcp(server.port)
    await half_head.send(b"GET /ws/ HTTP/1.1\r\nHost: x\r\nUpg")
    await half_head.aclose()

    reset = await open_tunnel(raw, server)
    assert isinstance(reset.stream, trio.SocketStream)
    reset.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await reset.send(client_frame(OP_TEXT, b"x" * 1000, fin=False))
    await reset.aclose()

    await good.send(client_frame(OP_CONTINUATION, b"part two"))
    assert (await read_data(good, 8))[0] == b"part two"
    await good.send(client_close_frame(1000))
    assert (await good.read_frames_until_close())[-1].close_code == 1000
    assert (await open_tunnel(raw, server)) is not None  # still accepting
