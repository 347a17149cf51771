"""Unit tests for the server-side WebSocket codec (wstrio._sansio.websocket.codec).

The client side is a real wsproto client ``Connection``, so frames are
encoded (and masked) by an implementation independent of the codec.
"""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto import events as ws
from wsproto.connection import Connection, ConnectionType

from wstrio._sansio.websocket.codec import (
    Close,
    Data,
    Event,
    Ping,
    Pong,
    TextFramer,
    WebSocketCodec,
    encode_frame,
)

MASK = b"\x01\x02\x03\x04"


def _client() -> Connection:
    return Connection(ConnectionType.CLIENT)


def _feed(codec: WebSocketCodec, data: bytes, *, bytewise: bool = False) -> list[Event]:
    events: list[Event] = []
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    for chunk in chunks:
        codec.receive_data(chunk)
        events.extend(codec.events())
    return events


def _payload(events: list[Event]) -> bytes:
    assert all(isinstance(e, Data) for e in events), events
    return b"".join(e.data for e in events if isinstance(e, Data))


def _masked(first: int, payload: bytes) -> bytes:
    """A client frame built by hand (``first`` = FIN/RSV/opcode byte), masked with MASK."""
    n = len(payload)
    if n < 126:
        header = bytes((first, 0x80 | n))
    elif n < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return header + MASK + masked


def _client_reads(client: Connection, data: bytes) -> list[ws.Event]:
    client.receive_data(data)
    return list(client.events())


def _message(events: list[ws.Event]) -> bytes | str:
    """The one whole message in ``events`` (wsproto may hand it over in pieces)."""
    parts = [e for e in events if isinstance(e, ws.Message)]
    assert parts, events
    assert parts[-1].message_finished
    assert all(type(p) is type(parts[0]) for p in parts)
    if isinstance(parts[0], ws.TextMessage):
        return "".join(str(p.data) for p in parts)
    return b"".join(bytes(p.data) for p in parts)


# -- client -> codec ----------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True])
def test_text_message_payload(binary: bool) -> None:
    codec = WebSocketCodec(binary=binary)
    raw = _client().send(ws.TextMessage("h\u00e9llo \u2603"))
    assert _payload(_feed(codec, raw)) == "h\u00e9llo \u2603".encode()


def test_binary_message_payload() -> None:
    data = bytes(range(256)) * 3
    assert _payload(_feed(WebSocketCodec(binary=False), _client().send(ws.BytesMessage(data)))) == data


def test_empty_message_gives_no_data_event() -> None:
    assert _feed(WebSocketCodec(binary=True), _client().send(ws.BytesMessage(b""))) == []


@pytest.mark.parametrize("kind", ["text", "bytes"])
def test_fragmented_message_fed_byte_by_byte(kind: str) -> None:
    client = _client()
    pieces = ["fr\u00e4g", "mented \U0001f600", " message"]
    raw = b""
    for i, piece in enumerate(pieces):
        finished = i == len(pieces) - 1
        if kind == "text":
            raw += client.send(ws.TextMessage(piece, message_finished=finished))
        else:
            raw += client.send(ws.BytesMessage(piece.encode(), message_finished=finished))
    events = _feed(WebSocketCodec(binary=False), raw, bytewise=True)
    assert _payload(events) == "".join(pieces).encode()


def _split(events: list[Event]) -> tuple[bytes, list[Event]]:
    """The data payload (in order) and the control events (in order).

    How payload is cut into :class:`Data` events, and where they fall
    between control events, is the codec's business: the backend sees a byte
    stream either way.
    """
    data = b"".join(e.data for e in events if isinstance(e, Data))
    return data, [e for e in events if not isinstance(e, Data)]


@pytest.mark.parametrize("bytewise", [False, True])
def test_several_messages_in_one_read(bytewise: bool) -> None:
    client = _client()
    raw = (
        client.send(ws.TextMessage("one"))
        + client.send(ws.Ping(b"p"))
        + client.send(ws.BytesMessage(b"two"))
        + client.send(ws.Pong(b"q"))
    )
    events = _feed(WebSocketCodec(binary=False), raw, bytewise=bytewise)
    assert _split(events) == (b"onetwo", [Ping(b"p"), Pong(b"q")])


def test_small_frames_in_one_read_are_one_data_event() -> None:
    """One read's worth of payload goes to the backend in one write."""
    client = _client()
    raw = b"".join(client.send(ws.BytesMessage(bytes([i]) * 3)) for i in range(50))
    events = _feed(WebSocketCodec(binary=True), raw)
    assert events == [Data(b"".join(bytes([i]) * 3 for i in range(50)))]


@pytest.mark.parametrize("bytewise", [False, True])
def test_ping_between_fragments(bytewise: bool) -> None:
    client = _client()
    raw = (
        client.send(ws.TextMessage("a", message_finished=False))
        + client.send(ws.Ping(b"mid"))
        + client.send(ws.TextMessage("b", message_finished=True))
    )
    events = _feed(WebSocketCodec(binary=False), raw, bytewise=bytewise)
    assert _split(events) == (b"ab", [Ping(b"mid")])


@pytest.mark.parametrize("split", range(1, 14))
def test_frame_header_split_across_reads(split: int) -> None:
    """Every cut inside two frames' headers (2-byte header, 16-bit length, mask)."""
    client = _client()
    raw = client.send(ws.TextMessage("x" * 200)) + client.send(ws.BytesMessage(b"tail"))
    codec = WebSocketCodec(binary=False)
    events = _feed(codec, raw[:split]) + _feed(codec, raw[split:])
    assert _split(events) == (b"x" * 200 + b"tail", [])


def test_large_message_split_at_every_boundary_keeps_bytes() -> None:
    data = bytes(range(256)) * 300  # 76800 bytes: 64-bit length form
    raw = _client().send(ws.BytesMessage(data))
    codec = WebSocketCodec(binary=True)
    events: list[Event] = []
    for i in range(0, len(raw), 997):
        codec.receive_data(raw[i : i + 997])
        events.extend(codec.events())
    assert _payload(events) == data


def test_ping_and_pong() -> None:
    client = _client()
    codec = WebSocketCodec(binary=False)
    assert _feed(codec, client.send(ws.Ping(b"abc"))) == [Ping(b"abc")]
    assert _feed(codec, client.send(ws.Ping(b""))) == [Ping(b"")]
    assert _feed(codec, client.send(ws.Pong(b"xyz"))) == [Pong(b"xyz")]


def test_pong_frame_answers_ping_in_client() -> None:
    client = _client()
    codec = WebSocketCodec(binary=False)
    (event,) = _feed(codec, client.send(ws.Ping(b"abc")))
    assert isinstance(event, Ping)
    assert _client_reads(client, codec.pong(event.payload)) == [ws.Pong(b"abc")]


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (1001, "bye"), (4000, "app \u00e9")])
def test_client_close(code: int, reason: str) -> None:
    codec = WebSocketCodec(binary=False)
    assert _feed(codec, _client().send(ws.CloseConnection(code, reason))) == [Close(code, reason, error=False)]
    assert codec.closed_by_client


def test_client_close_without_code_is_1005() -> None:
    codec = WebSocketCodec(binary=False)
    assert _feed(codec, _masked(0x88, b"")) == [Close(1005, "", error=False)]
    assert codec.closed_by_client


def test_data_before_close_in_same_read_is_delivered() -> None:
    client = _client()
    raw = client.send(ws.BytesMessage(b"last words")) + client.send(ws.CloseConnection(4000))
    events = _feed(WebSocketCodec(binary=True), raw)
    assert events == [Data(b"last words"), Close(4000, "", error=False)]


def test_nothing_after_close() -> None:
    codec = WebSocketCodec(binary=False)
    _feed(codec, _client().send(ws.CloseConnection(1000)))
    assert _feed(codec, _masked(0x81, b"late")) == []


def _protocol_error(raw: bytes) -> Close:
    codec = WebSocketCodec(binary=False)
    events = _feed(codec, raw)
    assert len(events) == 1, events
    close = events[0]
    assert isinstance(close, Close)
    assert close.error
    assert not codec.closed_by_client
    return close


def test_unmasked_frame_is_1002() -> None:
    assert _protocol_error(encode_frame(0x1, b"hello")).code == 1002


def test_control_frame_over_125_bytes_is_1002() -> None:
    assert _protocol_error(_masked(0x89, b"x" * 126)).code == 1002
    assert _protocol_error(_masked(0x89, b"x" * 300)).code == 1002


def test_control_frame_of_125_bytes_is_fine() -> None:
    assert _feed(WebSocketCodec(binary=False), _masked(0x89, b"x" * 125)) == [Ping(b"x" * 125)]


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10])
def test_rsv_bits_are_1002(rsv: int) -> None:
    assert _protocol_error(_masked(0x80 | rsv | 0x1, b"hi")).code == 1002


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_reserved_opcodes_are_1002(opcode: int) -> None:
    assert _protocol_error(_masked(0x80 | opcode, b"")).code == 1002


def test_continuation_without_message_is_1002() -> None:
    assert _protocol_error(_masked(0x80, b"x")).code == 1002


def test_fragmented_ping_is_1002() -> None:
    assert _protocol_error(_masked(0x09, b"x")).code == 1002


def test_new_message_inside_fragmented_message_is_1002() -> None:
    codec = WebSocketCodec(binary=False)
    events = _feed(codec, _masked(0x01, b"a") + _masked(0x81, b"b"))
    assert events[0] == Data(b"a")
    assert isinstance(events[-1], Close)
    assert events[-1].code == 1002
    assert events[-1].error


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\x03", 1002),  # a 1-byte close payload
        (struct.pack("!H", 1005), 1002),  # codes that must never be on the wire
        (struct.pack("!H", 1006), 1002),
        (struct.pack("!H", 1015), 1002),
        (struct.pack("!H", 999), 1002),
        (struct.pack("!H", 5000), 1002),
        (struct.pack("!H", 1000) + b"\xff", 1007),  # reason not UTF-8
    ],
)
def test_bad_close_frames(payload: bytes, code: int) -> None:
    assert _protocol_error(_masked(0x88, payload)).code == code


def test_64bit_length_with_msb_set_is_1002() -> None:
    raw = struct.pack("!BBQ", 0x82, 0x80 | 127, 1 << 63) + MASK
    assert _protocol_error(raw).code == 1002


def test_invalid_utf8_text_is_1007() -> None:
    assert _protocol_error(_masked(0x81, b"ok \xff")).code == 1007


def test_invalid_utf8_text_fed_byte_by_byte_is_1007() -> None:
    # A prefix that could still be valid may already have been passed on; the error ends it.
    events = _feed(WebSocketCodec(binary=False), _masked(0x81, b"ok\xc3\x28"), bytewise=True)
    close = events[-1]
    assert isinstance(close, Close)
    assert (close.code, close.error) == (1007, True)
    assert _split(events[:-1]) in ((b"ok", []), (b"ok\xc3", []))


def test_utf8_split_across_fragments_is_fine() -> None:
    snowman = "\u2603".encode()
    raw = _masked(0x01, snowman[:1]) + _masked(0x80, snowman[1:])
    assert _payload(_feed(WebSocketCodec(binary=False), raw, bytewise=True)) == snowman


def test_pipelined_leftover_is_parsed() -> None:
    codec = WebSocketCodec(binary=False, leftover=_client().send(ws.TextMessage("early")))
    assert list(codec.events()) == [Data(b"early")]


_client_events = st.one_of(
    st.builds(lambda t, fin: ws.TextMessage(t, message_finished=fin), st.text(max_size=40), st.booleans()),
    st.builds(lambda b, fin: ws.BytesMessage(b, message_finished=fin), st.binary(max_size=300), st.booleans()),
    st.builds(ws.Ping, st.binary(max_size=125)),
    st.builds(ws.Pong, st.binary(max_size=125)),
)


@given(st.lists(_client_events, max_size=12), st.data())
def test_any_client_stream_split_anywhere(events: list[ws.Event], data: st.DataObject) -> None:
    """Whatever a wsproto client sends, cut at any points, gives the same payload and controls."""
    client = _client()
    raw = b""
    payload = b""
    controls: list[Event] = []
    kind: type | None = None  # the message in progress
    for event in events:
        if isinstance(event, ws.Message):
            if kind is not None and type(event) is not kind:
                continue  # wsproto itself refuses to interleave message types
            raw += client.send(event)
            payload += event.data.encode() if isinstance(event, ws.TextMessage) else bytes(event.data)
            kind = None if event.message_finished else type(event)
        elif isinstance(event, ws.Ping):
            raw += client.send(event)
            controls.append(Ping(bytes(event.payload)))
        elif isinstance(event, ws.Pong):
            raw += client.send(event)
            controls.append(Pong(bytes(event.payload)))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=10)))
    codec = WebSocketCodec(binary=False)
    got: list[Event] = []
    for a, b in itertools.pairwise([0, *cuts, len(raw)]):
        got += _feed(codec, raw[a:b])
    assert _split(got) == (payload, controls)


# -- codec -> client -------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 1 << 20])
@pytest.mark.parametrize("binary", [False, True])
def test_data_frames_parse_in_wsproto_client(size: int, binary: bool) -> None:
    codec = WebSocketCodec(binary=binary)
    assert codec.binary is binary
    payload = bytes(i % 251 for i in range(size)) if binary else b"a" * size
    frame = codec.data(payload)
    header = {0: 2, 1: 2, 125: 2, 126: 4, 65535: 4}.get(size, 10)
    assert len(frame) == header + size
    assert frame[0] == 0x80 | (0x2 if binary else 0x1)
    assert frame[1] & 0x80 == 0, "server frames are never masked"
    got = _message(_client_reads(_client(), frame))
    assert got == (payload if binary else payload.decode())


def test_several_data_frames_in_one_read() -> None:
    codec = WebSocketCodec(binary=True)
    events = _client_reads(_client(), codec.data(b"one") + codec.data(b"two"))
    assert [bytes(e.data) for e in events if isinstance(e, ws.BytesMessage)] == [b"one", b"two"]


def test_ping_frame_parses_in_client_and_is_capped() -> None:
    codec = WebSocketCodec(binary=False)
    assert _client_reads(_client(), codec.ping(b"ping")) == [ws.Ping(b"ping")]
    assert _client_reads(_client(), codec.ping(b"x" * 200)) == [ws.Ping(b"x" * 125)]


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (1001, "going away"), (1011, "backend \u00e9rror")])
def test_close_frame_encodes_code_and_reason(code: int, reason: str) -> None:
    codec = WebSocketCodec(binary=False)
    before = (codec.can_send, codec.close_sent)
    frame = codec.close(code, reason)
    assert before == (True, False)
    assert (codec.can_send, codec.close_sent) == (False, True)
    assert frame[:2] == bytes((0x88, 2 + len(reason.encode())))
    assert struct.unpack("!H", frame[2:4]) == (code,)
    (event,) = _client_reads(_client(), frame)
    assert event == ws.CloseConnection(code, reason)


def test_close_reason_truncated_without_cutting_utf8() -> None:
    reason = "\u00e9" * 100  # 200 bytes; byte 123 falls inside a character
    frame = WebSocketCodec(binary=False).close(1001, reason)
    assert len(frame) - 2 <= 125
    (event,) = _client_reads(_client(), frame)
    assert isinstance(event, ws.CloseConnection)
    assert event.code == 1001
    assert event.reason == "\u00e9" * 61


def test_close_reason_truncated_ascii() -> None:
    frame = WebSocketCodec(binary=False).close(1011, "x" * 500)
    assert len(frame) == 2 + 125
    (event,) = _client_reads(_client(), frame)
    assert event == ws.CloseConnection(1011, "x" * 123)


@pytest.mark.parametrize("code", [1005, 1006, 1015])
def test_close_with_reserved_code_sends_empty_close(code: int) -> None:
    frame = WebSocketCodec(binary=False).close(code, "ignored")
    assert frame == b"\x88\x00"


# -- TextFramer -----------------------------------------------------------------------------------


def _framed(chunks: list[bytes]) -> list[bytes]:
    framer = TextFramer()
    out = [framer.feed(c) for c in chunks]
    out.append(framer.flush())
    return out


@st.composite
def _text_and_cuts(draw: st.DrawFn) -> tuple[str, list[bytes]]:
    text = draw(st.text())
    data = text.encode()
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=20)))
    bounds = [0, *cuts, len(data)]
    return text, [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(_text_and_cuts())
def test_textframer_reassembles_any_split(case: tuple[str, list[bytes]]) -> None:
    text, chunks = case
    out = _framed(chunks)
    assert b"".join(out) == text.encode()
    for piece in out:
        piece.decode("utf-8")  # every frame is valid UTF-8 on its own


@pytest.mark.parametrize("char", ["\u00e9", "\u2603", "\U0001f600"])
def test_textframer_holds_back_incomplete_tail(char: str) -> None:
    data = char.encode()
    framer = TextFramer()
    assert framer.feed(b"a" + data[:-1]) == b"a"
    assert framer.feed(data[-1:] + b"b") == data + b"b"
    assert framer.flush() == b""


def test_textframer_one_byte_at_a_time() -> None:
    data = "\U0001f600\u2603\u00e9x".encode()
    out = _framed([data[i : i + 1] for i in range(len(data))])
    assert [p for p in out if p] == ["\U0001f600".encode(), "\u2603".encode(), "\u00e9".encode(), b"x"]


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"caf\xe9 ok"], "caf\ufffd ok"),
        ([b"\xff\xfe"], "\ufffd\ufffd"),
        ([b"\x80x"], "\ufffdx"),
        ([b"a\xc3"], "a\ufffd"),  # truncated at end of stream: flush replaces it
        ([b"\xc3", b"x"], "\ufffdx"),  # a lead byte followed by a non-continuation
        ([b"\xed\xa0\x80"], "\ufffd\ufffd\ufffd"),  # surrogate encoding is not UTF-8
    ],
)
def test_textframer_replaces_invalid_bytes(chunks: list[bytes], expected: str) -> None:
    out = _framed(chunks)
    for piece in out:
        piece.decode("utf-8")
    assert b"".join(out).decode() == expected


@given(st.lists(st.binary(max_size=20), max_size=10))
def test_textframer_output_always_valid_utf8(chunks: list[bytes]) -> None:
    out = _framed(chunks)
    for piece in out:
        piece.decode("utf-8")
    joined = b"".join(chunks)
    try:
        joined.decode("utf-8")
    except UnicodeDecodeError:
        assert "\ufffd" in b"".join(out).decode()
    else:
        assert b"".join(out) == joined  # valid input passes unchanged, however it is split


# -- max-frame-size and max-message-size ---------------------------------------------


def test_frame_above_max_frame_size_is_1009_before_its_payload() -> None:
    codec = WebSocketCodec(binary=True, max_frame_size=100)
    header_only = _masked(0x82, b"x" * 101)[:8]  # header and mask: no payload yet
    events = _feed(codec, _masked(0x82, b"a" * 100) + header_only)
    assert [e for e in events if isinstance(e, Data)] == [Data(b"a" * 100)]
    close = events[-1]
    assert isinstance(close, Close)
    assert (close.code, close.error) == (1009, True)
    assert "max-frame-size" in close.reason


def test_message_above_max_message_size_is_1009() -> None:
    codec = WebSocketCodec(binary=True, max_message_size=10)
    fragments = _masked(0x02, b"12345") + _masked(0x00, b"6789") + _masked(0x80, b"ab")
    events = _feed(codec, fragments)
    assert _payload(events[:-1]) == b"123456789"
    assert isinstance(events[-1], Close)
    assert events[-1].code == 1009


def test_message_size_counts_each_message_afresh() -> None:
    codec = WebSocketCodec(binary=True, max_message_size=10, max_frame_size=10)
    stream = b"".join(_masked(0x82, b"0123456789") for _ in range(5))
    assert _payload(_feed(codec, stream)) == b"0123456789" * 5


def test_control_frames_do_not_count_towards_the_message() -> None:
    codec = WebSocketCodec(binary=True, max_message_size=10)
    events = _feed(codec, _masked(0x02, b"12345") + _masked(0x89, b"p" * 100) + _masked(0x80, b"67890"))
    assert not any(isinstance(e, Close) for e in events)
    assert b"".join(e.data for e in events if isinstance(e, Data)) == b"1234567890"


def test_declared_2_63_byte_frame_without_limit_is_streamed() -> None:
    codec = WebSocketCodec(binary=True)
    header = struct.pack("!BBQ", 0x82, 0x80 | 127, (1 << 63) - 1) + MASK
    events = _feed(codec, header + bytes(b ^ MASK[i % 4] for i, b in enumerate(b"abcd")))
    assert _payload(events) == b"abcd"
