"""HTTP/2 floods end with GOAWAY ENHANCE_YOUR_CALM; legitimate heavy clients never do.

Each flood is raw frames (hyperframe, HPACK by the ``hpack`` package) on a
real socket; while it runs, a well-behaved client (:mod:`tests.h2client`) on
a second connection fetches a file and talks on a WebSocket, before and
after the flooding connection is dropped.  The budget itself is unit-tested
in ``tests/unit/test_h2budget.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h2.events
import pytest
import trio
from h2.errors import ErrorCodes
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

import wstrio
from tests.h2client import H2Client, open_h2_client
from tests.helpers import echo_route, serve_echo_tcp, serve_tcp_backend, start_server
from wstrio._io.http.h2.connection import PREFACE
from wstrio._sansio.http.h2budget import BURST

FLOOD = 20_000
"""Frames in each flood: far above the budget."""
BODY = b"static file over h2\n"


async def flood_server(nursery: trio.Nursery, root: Path, **server: Any) -> wstrio.Server:
    """wstrio with a document root, ``/ws/`` to an echo backend and ``/hang/`` to a backend that never answers."""
    (root / "file.txt").write_bytes(BODY)
    echo = await serve_echo_tcp(nursery)

    async def hang_up(_stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    hang = await serve_tcp_backend(nursery, hang_up)
    routes = [
        echo_route(echo),
        {"path": "/hang/", "handler": "proxy", "backend": [{"host": "127.0.0.1", "port": hang}]},
    ]
    return await start_server(nursery, {"server": {"document-root": str(root), **server}, "route": routes})


def request_block(encoder: Encoder, path: str = "/file.txt", method: str = "GET") -> bytes:
    block: bytes = encoder.encode(
        [(b":method", method.encode()), (b":scheme", b"http"), (b":authority", b"localhost"), (b":path", path.encode())]
    )
    return block


def headers(stream_id: int, block: bytes, *, end_stream: bool = True) -> bytes:
    flags = ["END_HEADERS", "END_STREAM"] if end_stream else ["END_HEADERS"]
    return HeadersFrame(stream_id, block, flags=flags).serialize()


def settings_with(entries: int) -> bytes:
    """A SETTINGS frame with ``entries`` entries (an unknown identifier, which h2 still processes)."""
    payload = b"\x00\x99\x00\x00\x00\x01" * entries
    return len(payload).to_bytes(3, "big") + b"\x04\x00\x00\x00\x00\x00" + payload


# Each flood: the frames sent after the preface and the client's SETTINGS.
# None of them ACKs the server's SETTINGS, so h2 does not enforce
# max-concurrent-streams itself and wstrio's own refusal is what is counted.


def ping_flood() -> Iterator[bytes]:
    ping = PingFrame(0, opaque_data=b"floodppp").serialize()
    for _ in range(FLOOD):
        yield ping


def settings_flood() -> Iterator[bytes]:
    settings = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 65535}).serialize()
    for _ in range(FLOOD):
        yield settings


def large_settings_flood() -> Iterator[bytes]:
    frame = settings_with(2700)  # 16,200 bytes, within the 16 KiB frame limit
    for _ in range(40):
        yield frame


def rapid_reset_flood() -> Iterator[bytes]:
    encoder = Encoder()
    for n in range(FLOOD):
        stream_id = 1 + 2 * n
        yield (
            headers(stream_id, request_block(encoder, "/hang/x")) + RstStreamFrame(stream_id, error_code=8).serialize()
        )


def window_update_flood() -> Iterator[bytes]:
    update = WindowUpdateFrame(0, window_increment=1).serialize()
    for _ in range(FLOOD):
        yield update


def empty_data_flood() -> Iterator[bytes]:
    yield headers(1, request_block(Encoder(), "/hang/x", "POST"), end_stream=False)
    empty = DataFrame(1, b"").serialize()
    for _ in range(FLOOD):
        yield empty


def empty_continuation_flood() -> Iterator[bytes]:
    yield HeadersFrame(1, request_block(Encoder())).serialize()  # no END_HEADERS
    empty = ContinuationFrame(1, b"").serialize()
    for _ in range(FLOOD):
        yield empty


def data_after_end_stream_flood() -> Iterator[bytes]:
    # MadeYouReset: each DATA on a stream the client ended makes h2 send
    # RST_STREAM(STREAM_CLOSED); the DATA frames themselves carry bytes.
    encoder = Encoder()
    for n in range(FLOOD):
        stream_id = 1 + 2 * n
        yield headers(stream_id, request_block(encoder, "/hang/x")) + DataFrame(stream_id, b"x").serialize()


def window_overflow_flood() -> Iterator[bytes]:
    # MadeYouReset: a WINDOW_UPDATE that overflows a stream's window makes
    # h2 reset the stream (FLOW_CONTROL_ERROR) while its request runs on.
    encoder = Encoder()
    for n in range(FLOOD):
        stream_id = 1 + 2 * n
        yield (
            headers(stream_id, request_block(encoder, "/hang/x"))
            + WindowUpdateFrame(stream_id, window_increment=(1 << 31) - 1).serialize()
        )


def headers_beyond_the_stream_limit() -> Iterator[bytes]:
    # Streams to a backend that never answers pile up; the first beyond
    # max-concurrent-streams is a protocol error for h2, which ends the
    # connection with GOAWAY PROTOCOL_ERROR (RFC 9113 section 5.1.2 allows a
    # stream error there too; either way the client gets no more).
    encoder = Encoder()
    for n in range(FLOOD):
        yield headers(1 + 2 * n, request_block(encoder, "/hang/x"))


FLOODS: dict[str, tuple[Callable[[], Iterator[bytes]], tuple[str, ...]]] = {
    # name: (the frames, the kinds the log may name)
    "ping": (ping_flood, ("PING",)),
    "settings": (settings_flood, ("SETTINGS",)),
    "large settings": (large_settings_flood, ("SETTINGS",)),
    "rapid reset": (rapid_reset_flood, ("RST_STREAM", "rapid reset")),
    "window update": (window_update_flood, ("WINDOW_UPDATE",)),
    "empty data": (empty_data_flood, ("empty DATA",)),
    "data after end stream": (data_after_end_stream_flood, ("RST_STREAM sent",)),
    "window overflow": (window_overflow_flood, ("WINDOW_UPDATE", "RST_STREAM sent")),
    "headers beyond the limit": (headers_beyond_the_stream_limit, ("Max inbound streams",)),
}
# Floods that end with GOAWAY PROTOCOL_ERROR (h2's verdict) rather than ENHANCE_YOUR_CALM
PROTOCOL_ERRORS = {"headers beyond the limit"}


class RawResult:
    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.goaway: GoAwayFrame | None = None
        self.bytes = 0

    def count(self, frame_type: type[Frame]) -> int:
        return sum(isinstance(f, frame_type) for f in self.frames)


async def read_frames(stream: trio.SocketStream, result: RawResult) -> None:
    """Read frames until GOAWAY or the end of the connection."""
    buffer = bytearray()
    while result.goaway is None:
        try:
            data = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            return
        if not data:
            return
        result.bytes += len(data)
        buffer += data
        while len(buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buffer[:9]))
            if len(buffer) < 9 + length:
                break
            frame.parse_body(memoryview(buffer[9 : 9 + length]))
            del buffer[: 9 + length]
            result.frames.append(frame)
            if isinstance(frame, GoAwayFrame):
                result.goaway = frame


async def run_flood(port: int, frames: Iterator[bytes], *, read: bool = True) -> RawResult:
    """Send the preface, an empty SETTINGS and ``frames``; return what came back."""
    result = RawResult()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream, trio.open_nursery() as nursery:
        if read:
            nursery.start_soon(read_frames, stream, result)
        try:
            await stream.send_all(PREFACE + SettingsFrame(0).serialize())
            batch = bytearray()
            for frame in frames:
                batch += frame
                if len(batch) >= 32768:
                    await stream.send_all(batch)
                    batch.clear()
            # A server that took it all now gets our GOAWAY, so the test
            # ends (and fails) instead of waiting for the server's.
            await stream.send_all(batch + GoAwayFrame(0, last_stream_id=0).serialize())
        except trio.BrokenResourceError:
            pass  # the server hung up in the middle: what a flood should get
        if not read:
            await read_frames(stream, result)
    return result


async def well_behaved(client: H2Client, label: str) -> None:
    """What the bystander connection does: a file and a WebSocket round trip."""
    status, _, body = await client.get("/file.txt", scheme="http")
    assert (status, body) == (200, BODY)
    ws = await client.websocket("/ws/", scheme="http")
    await ws.send_text(label)
    assert await ws.receive_message() == label
    await ws.close()


def flood_logs(caplog: pytest.LogCaptureFixture, marker: str = "HTTP/2 flood") -> list[str]:
    return [r.getMessage() for r in caplog.records if marker in r.getMessage()]


@pytest.mark.parametrize("name", list(FLOODS))
async def test_a_flood_gets_goaway_enhance_your_calm_and_others_are_served(
    name: str, nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "wstrio.connection")
    make_frames, kinds = FLOODS[name]
    server = await flood_server(nursery, tmp_path)
    async with open_h2_client("127.0.0.1", server.port) as bystander:
        await well_behaved(bystander, "before")
        result: RawResult | None = None

        async def flood() -> None:
            nonlocal result
            result = await run_flood(server.port, make_frames())

        async with trio.open_nursery() as during:
            during.start_soon(flood)
            await well_behaved(bystander, "during")
        assert result is not None
        assert result.goaway is not None, f"no GOAWAY after {result.bytes} bytes: {result.frames[-3:]}"
        protocol_error = name in PROTOCOL_ERRORS
        expected = ErrorCodes.PROTOCOL_ERROR if protocol_error else ErrorCodes.ENHANCE_YOUR_CALM
        assert result.goaway.error_code == expected
        # Bounded work: never more answers than the budget allows.
        assert result.count(PingFrame) <= BURST + 1
        assert result.count(SettingsFrame) <= BURST + 2
        await well_behaved(bystander, "after")
        assert bystander.goaway is None
    logs = flood_logs(caplog, "HTTP/2 protocol error" if protocol_error else "HTTP/2 flood")
    assert len(logs) == 1, logs
    assert "127.0.0.1" in logs[0]
    assert any(kind in logs[0] for kind in kinds), logs[0]


async def test_a_client_that_never_reads_cannot_pile_up_answers(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 100,000 PINGs (1.7 MB) sent without reading a byte: the server stops
    # at the budget, so at most that many ACKs were ever queued for us.
    caplog.set_level(logging.INFO, "wstrio.connection")
    server = await flood_server(nursery, tmp_path)
    ping = PingFrame(0, opaque_data=b"neverrd!").serialize()
    # A guard, not a measurement: a server that queues every ACK stops
    # reading once its buffer is full, and neither side could go on.
    with trio.fail_after(60):
        result = await run_flood(server.port, iter([ping] * 100_000), read=False)
    assert result.count(PingFrame) <= BURST
    assert result.bytes < 16_384
    if result.goaway is not None:  # the kernel may have dropped it with a reset
        assert result.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert len(flood_logs(caplog)) == 1


async def test_500_sequential_requests_on_one_connection_never_get_goaway(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = await flood_server(nursery, tmp_path)
    async with open_h2_client("127.0.0.1", server.port) as client:
        for i in range(500):
            status, _, body = await client.get("/file.txt", scheme="http")
            assert (status, body) == (200, BODY), i
            if i % 10 == 0:
                await client.ping()
        assert client.goaway is None


async def test_a_websocket_acking_every_frame_never_gets_goaway(nursery: trio.Nursery, tmp_path: Path) -> None:
    # 3,000 echoed messages, each acknowledged at once with a stream and a
    # connection WINDOW_UPDATE (6,000 of them, far above the burst), and a
    # PING every 20 messages: all justified by the DATA the server sent.
    server = await flood_server(nursery, tmp_path)
    async with open_h2_client("127.0.0.1", server.port) as client:
        ws = await client.websocket("/ws/", scheme="http", auto_ack=False)
        stream_id = ws.stream.stream_id
        updates = 0
        for i in range(3000):
            await ws.send_text(f"message {i}")
            assert await ws.receive_message() == f"message {i}"
            n, ws.stream.unacked = ws.stream.unacked, 0
            client.conn.increment_flow_control_window(n, stream_id=stream_id)
            client.conn.increment_flow_control_window(n)
            updates += 2
            if i % 20 == 0:
                await client.ping()
            else:
                await client.flush()
        await ws.close()
        assert updates == 6000
        assert client.goaway is None
        assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in client.events)
