"""wstrio's frame decoder checked against wsproto, and fuzzed.

The decoder replaced wsproto's parser for speed (see wstrio._sansio.websocket.codec);
these properties keep the two in agreement.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from wstrio._sansio.websocket import codec as websocket
from wstrio._sansio.websocket.codec import Close, Data, WebSocketCodec, unmask_python

message = st.one_of(
    st.tuples(st.just("text"), st.text(max_size=300), st.integers(1, 4)),
    st.tuples(st.just("bytes"), st.binary(max_size=70000), st.integers(1, 3)),
    st.tuples(st.just("ping"), st.binary(max_size=125), st.just(1)),
    st.tuples(st.just("pong"), st.binary(max_size=125), st.just(1)),
)


def encode(client: Connection, kind: str, payload: str | bytes, parts: int) -> bytes:
    if kind == "ping":
        assert isinstance(payload, bytes)
        return client.send(Ping(payload))
    if kind == "pong":
        assert isinstance(payload, bytes)
        return client.send(Pong(payload))
    out = b""
    step = max(1, len(payload) // parts)
    chunks = [payload[i : i + step] for i in range(0, len(payload), step)] or [payload[:0]]
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        if kind == "text":
            assert isinstance(chunk, str)
            out += client.send(TextMessage(chunk, message_finished=last))
        else:
            assert isinstance(chunk, bytes)
            out += client.send(BytesMessage(chunk, message_finished=last))
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(message, max_size=8), st.lists(st.integers(1, 5000), max_size=20), st.integers(1000, 4999))
def test_any_valid_stream_in_any_split_gives_wsprotos_payloads_and_events(
    messages: list[tuple[str, str | bytes, int]], splits: list[int], close_code: int
) -> None:
    client = Connection(ConnectionType.CLIENT)
    wire = b"".join(encode(client, *m) for m in messages)
    if 1004 <= close_code <= 1006 or 1015 <= close_code < 3000:
        close_code = 1000
    wire += client.send(CloseConnection(close_code, "bye"))
    for implementation in {websocket.unmask, unmask_python}:  # the C accelerator and the fallback
        check_decoding(wire, splits, messages, close_code, implementation)


def check_decoding(
    wire: bytes,
    splits: list[int],
    messages: list[tuple[str, str | bytes, int]],
    close_code: int,
    implementation: object,
) -> None:
    saved = websocket.unmask
    websocket.unmask = implementation  # type: ignore[assignment]
    try:
        codec = WebSocketCodec(binary=True)
        data, controls = feed(codec, wire, splits)
    finally:
        websocket.unmask = saved
    expected_data = b"".join(p.encode() if isinstance(p, str) else p for k, p, _ in messages if k in ("text", "bytes"))
    assert data == expected_data
    expected_controls = [
        (websocket.Ping if k == "ping" else websocket.Pong)(p)
        for k, p, _ in messages
        if k in ("ping", "pong") and isinstance(p, bytes)
    ]
    assert controls == [*expected_controls, Close(close_code, "bye", False)]


def feed(codec: WebSocketCodec, wire: bytes, splits: list[int]) -> tuple[bytes, list[object]]:
    data = b""
    controls: list[object] = []
    pos = 0
    for size in [*splits, len(wire)]:
        codec.receive_data(wire[pos : pos + size])
        pos += size
        for event in codec.events():
            if isinstance(event, Data):
                data += event.data
            else:
                controls.append(event)
        if pos >= len(wire):
            break
    return data, controls


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_never_raises_and_errors_are_protocol_closes(garbage: bytes) -> None:
    codec = WebSocketCodec(binary=False)
    for i in range(0, len(garbage), 7):
        codec.receive_data(garbage[i : i + 7])
        for event in codec.events():
            if isinstance(event, Close) and event.error:
                assert event.code in (1002, 1007)


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 7, 8, 9, 63, 64, 65, 65536, 100003])
@pytest.mark.parametrize("offset", [0, 1, 2, 3])
def test_c_and_python_unmask_agree(n: int, offset: int) -> None:
    data = os.urandom(n)
    mask = os.urandom(4)
    expected = bytes(b ^ mask[(i + offset) % 4] for i, b in enumerate(data))
    assert unmask_python(data, mask, offset) == expected
    assert websocket.unmask(data, mask, offset) == expected


def test_the_c_accelerator_is_in_use_unless_disabled() -> None:
    if os.environ.get("WSTRIO_NO_SPEEDUPS"):
        assert websocket.unmask is unmask_python
    else:
        pytest.importorskip("wstrio._speedups")
        assert websocket.unmask is not unmask_python
