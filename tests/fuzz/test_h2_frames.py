"""A seeded HTTP/2 frame fuzzer: h2c clients sending mutated frame sequences (issue 12).

Each case starts from a valid sequence (a GET, a POST with a body to the
proxy, an RFC 8441 WebSocket CONNECT with a frame in DATA, control frames
in between), then mutates it at the frame level (a frame dropped,
repeated, moved; its type, flags, stream id or length changed; its payload
mutated) and sends it after the connection preface on a fresh connection.
The client does not half-close (an HTTP/2 server takes EOF as the client
leaving and abandons its streams); it reads until every stream it opened
has ended, a GOAWAY, EOF, or a quiet quarter second, then closes abruptly
(so the abandoned-stream paths are fuzzed too).  wstrio's answer is parsed
frame by frame: no ``:status`` 5xx (the backends
are healthy), no GOAWAY or RST_STREAM with INTERNAL_ERROR (that would be
wstrio's own failure), a quiet log, a control client served and the file
descriptors back.
"""

from __future__ import annotations

import struct

import hpack
import pytest
import trio
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from tests.fuzz.conftest import Gateway, LoudRecords, after_run, open_fds, run_cases
from tests.fuzz.mutator import Mutator, fuzz_cases, fuzz_seed
from tests.helpers import client_frame

pytestmark = pytest.mark.slow

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
INTERNAL_ERROR = 2
QUIET = 0.25
"""Real seconds without data after which a case stops reading (answers after it are not checked)."""
OPENED = {1, 3, 5}
"""The streams the valid sequences open (more may be opened by mutation)."""


def _frames(data: bytes | bytearray) -> list[tuple[int, int, int, bytes]]:
    """The complete frames at the start of ``data``: (type, flags, stream id, payload)."""
    out = []
    i = 0
    while i + 9 <= len(data):
        length = int.from_bytes(data[i : i + 3], "big")
        if i + 9 + length > len(data):
            break
        kind, flags = data[i + 3], data[i + 4]
        stream_id = int.from_bytes(data[i + 5 : i + 9], "big") & 0x7FFFFFFF
        out.append((kind, flags, stream_id, bytes(data[i + 9 : i + 9 + length])))
        i += 9 + length
    return out


async def exchange_h2(port: int, data: bytes, limit: int = 1 << 20) -> bytes:
    """Send ``data``; read until the streams ended, GOAWAY, EOF or :data:`QUIET`; close abruptly."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = bytearray()
    try:
        try:
            await stream.send_all(data)
        except trio.BrokenResourceError:
            pass
        while len(received) < limit:
            chunk = b""
            with trio.move_on_after(QUIET):
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
            if not chunk:
                break
            received += chunk
            ended = set()
            for kind, flags, stream_id, _ in _frames(received):
                if kind == 0x7:  # GOAWAY
                    return bytes(received)
                if kind == 0x3 or (kind in (0x0, 0x1) and flags & 0x1):  # RST_STREAM, END_STREAM
                    ended.add(stream_id)
            if OPENED & {sid for sid in ended} == OPENED & _opened(data):
                break
    finally:
        await trio.aclose_forcefully(stream)
    return bytes(received)


def _opened(data: bytes) -> set[int]:
    return {sid for kind, _, sid, _ in _frames(data[len(PREFACE) :]) if kind == 0x1}


def _headers(
    encoder: hpack.Encoder, stream_id: int, fields: list[tuple[str, str]], *, end_stream: bool, split: bool = False
) -> list[Frame]:
    block = encoder.encode(fields)
    if not split or len(block) < 2:
        frame = HeadersFrame(stream_id, block)
        frame.flags.add("END_HEADERS")
        if end_stream:
            frame.flags.add("END_STREAM")
        return [frame]
    first = HeadersFrame(stream_id, block[: len(block) // 2])
    if end_stream:
        first.flags.add("END_STREAM")
    rest = ContinuationFrame(stream_id, block[len(block) // 2 :])
    rest.flags.add("END_HEADERS")
    return [first, rest]


def _data(stream_id: int, data: bytes, *, end_stream: bool) -> DataFrame:
    frame = DataFrame(stream_id, data)
    if end_stream:
        frame.flags.add("END_STREAM")
    return frame


GET = [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/index.html")]
POST = [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", "/proxy/p"), ("content-length", "5")]
CONNECT = [
    (":method", "CONNECT"),
    (":protocol", "websocket"),
    (":scheme", "http"),
    (":authority", "x"),
    (":path", "/ws/"),
    ("sec-websocket-version", "13"),
]


def valid_sequence(m: Mutator) -> list[Frame]:
    encoder = hpack.Encoder()  # one per connection, as the server has one decoder
    settings = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 65535})
    frames: list[Frame] = [settings]
    kind = m.random.randrange(4)
    split = m.random.random() < 0.3
    if kind == 0:
        frames += _headers(encoder, 1, GET, end_stream=True, split=split)
    elif kind == 1:
        frames += _headers(encoder, 1, POST, end_stream=False, split=split)
        frames.append(_data(1, b"hello", end_stream=True))
    elif kind == 2:
        frames += _headers(encoder, 1, CONNECT, end_stream=False, split=split)
        frames.append(_data(1, client_frame(0x1, b"hi"), end_stream=False))
        frames.append(_data(1, client_frame(0x8, struct.pack("!H", 1000)), end_stream=True))
    else:
        frames += _headers(encoder, 1, GET, end_stream=True)
        frames += _headers(encoder, 3, POST, end_stream=False, split=split)
        frames.append(_data(3, b"hel", end_stream=False))
        frames.append(_data(3, b"lo", end_stream=True))
        frames += _headers(encoder, 5, CONNECT, end_stream=False)
    extras: list[Frame] = [
        PingFrame(0, b"12345678"),
        WindowUpdateFrame(0, 1000),
        WindowUpdateFrame(1, 1000),
        PriorityFrame(1, depends_on=0, stream_weight=16),
        RstStreamFrame(1, 8),
        SettingsFrame(0, settings={SettingsFrame.MAX_FRAME_SIZE: 16384}),
        GoAwayFrame(0, last_stream_id=0, error_code=0),
    ]
    for _ in range(m.random.choice((0, 1, 2))):
        frames.insert(m.random.randrange(1, len(frames) + 1), extras[m.random.randrange(len(extras))])
    return frames


def mutate_frame(m: Mutator, raw: bytes) -> bytes:
    """One frame's bytes (9-byte header + payload) with its header or payload changed."""
    header, payload = bytearray(raw[:9]), raw[9:]
    op = m.random.randrange(6)
    if op == 0:
        header[3] = m.random.randrange(12)  # the type (10, 11: unknown ones)
    elif op == 1:
        header[4] = m.random.randrange(256)  # flags
    elif op == 2:
        stream_id = m.random.choice((0, 1, 2, 3, 7, 0x7FFFFFFF, 0xFFFFFFFF))
        header[5:9] = struct.pack("!I", stream_id)
    elif op == 3:
        length = m.random.choice((0, 1, len(payload) + 1, max(0, len(payload) - 1), 16385, 0xFFFFFF))
        header[0:3] = length.to_bytes(3, "big")
    else:
        payload = m.mutate(payload, 1)
        header[0:3] = len(payload).to_bytes(3, "big") if m.random.random() < 0.8 else header[0:3]
    return bytes(header) + payload


def build(m: Mutator) -> bytes:
    raws = [frame.serialize() for frame in valid_sequence(m)]
    for _ in range(m.random.choice((1, 1, 2, 3))):
        i = m.random.randrange(len(raws))
        op = m.random.randrange(5)
        if op == 0:
            del raws[i]
        elif op == 1:
            raws.insert(i, raws[i])
        elif op == 2:
            raws.insert(m.random.randrange(len(raws) + 1), raws.pop(i))
        elif op == 3 and len(raws) > 0:
            raws[i] = raws[i] * m.random.choice((2, 50, 600))  # floods, for the budgets
        else:
            raws[i] = mutate_frame(m, raws[i])
        if not raws:
            break
    return PREFACE + b"".join(raws)


def check_answer(sent: bytes, answer: bytes) -> None:
    """Parse wstrio's frames: no 5xx status, no INTERNAL_ERROR."""
    decoder = hpack.Decoder()
    decoder.max_allowed_table_size = 65536
    i = 0
    block = b""
    while i + 9 <= len(answer):
        frame, length = Frame.parse_frame_header(memoryview(answer[i : i + 9]))
        payload = answer[i + 9 : i + 9 + length]
        i += 9 + length
        if len(payload) < length:
            break  # cut off by the read limit
        frame.parse_body(memoryview(payload))
        if isinstance(frame, GoAwayFrame):
            assert frame.error_code != INTERNAL_ERROR, f"GOAWAY INTERNAL_ERROR for {sent[:400]!r}"
        elif isinstance(frame, RstStreamFrame):
            assert frame.error_code != INTERNAL_ERROR, f"RST_STREAM INTERNAL_ERROR for {sent[:400]!r}"
        elif isinstance(frame, (HeadersFrame, ContinuationFrame)):
            block += frame.data
            if "END_HEADERS" in frame.flags:
                fields = dict(decoder.decode(block))
                block = b""
                status = int(fields.get(":status", "200"))
                assert status < 500, f":status {status} for {sent[:400]!r}"


async def test_mutated_frame_sequences(gateway: Gateway, loud: LoudRecords) -> None:
    seed = fuzz_seed()
    fds_before = open_fds()
    answered = {"n": 0}

    async def case(i: int) -> None:
        m = Mutator(seed * 1_000_037 + i)
        sent = build(m)
        answer = await exchange_h2(gateway.port, sent)
        check_answer(sent, answer)
        if answer:
            answered["n"] += 1

    await run_cases(fuzz_cases(1500), case)
    await after_run(gateway, loud, fds_before)
    assert answered["n"] > fuzz_cases(1500) // 2
