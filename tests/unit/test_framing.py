"""Message framing (sans-I/O): the splitter of backend bytes and the codec's message mode."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import client_frame
from wstrio._sansio.websocket.codec import OP_CONTINUATION, OP_TEXT, Data, WebSocketCodec
from wstrio._sansio.websocket.framing import Framing, FramingError


def test_lines_strip_the_newline_and_a_carriage_return() -> None:
    splitter = Framing("lines").splitter(text=True)
    assert splitter.feed(b"one\r\ntw") == [b"one"]
    assert splitter.pending
    assert splitter.feed(b"o\n\nthree") == [b"two", b""]
    assert splitter.flush() == b"three"
    assert splitter.flush() is None


def test_a_line_longer_than_max_message_size_comes_in_pieces() -> None:
    splitter = Framing("lines", max_message_size=4).splitter(text=False)
    assert splitter.feed(b"abcdefghij") == [b"abcd", b"efgh"]
    assert splitter.feed(b"\n") == [b"ij"]


def test_text_messages_are_valid_utf8() -> None:
    splitter = Framing("nul").splitter(text=True)
    assert splitter.feed(b"caf\xe9\0ok\0") == ["caf\ufffd".encode(), b"ok"]
    assert Framing("nul").splitter(text=False).feed(b"caf\xe9\0") == [b"caf\xe9"]


@pytest.mark.parametrize("size", [2, 4, 8])
def test_length_prefixed_both_ways(size: int) -> None:
    framing = Framing("length-prefixed", length_bytes=size)
    wire = framing.encode(b"hello") + framing.encode(b"") + framing.encode(b"x" * 300)
    assert wire[:size] == (5).to_bytes(size, "big")
    splitter = framing.splitter(text=False)
    got = []
    for i in range(len(wire)):  # one byte at a time
        got += splitter.feed(wire[i : i + 1])
    assert got == [b"hello", b"", b"x" * 300]
    assert splitter.flush() is None


def test_a_declared_length_over_the_limit_is_an_error() -> None:
    splitter = Framing("length-prefixed", length_bytes=2, max_message_size=10).splitter(text=False)
    with pytest.raises(FramingError, match="11-byte message"):
        splitter.feed(b"\0\x0b")


def test_encode_adds_the_delimiter_unless_it_is_there() -> None:
    assert Framing("lines").encode(b"1") == b"1\n"
    assert Framing("lines").encode(b"1\n") == b"1\n"
    assert Framing("nul").encode(b"a") == b"a\0"


@given(st.lists(st.binary(max_size=50).filter(lambda b: b"\n" not in b), max_size=10), st.integers(1, 7))
def test_lines_round_trip_in_any_chunking(lines: list[bytes], step: int) -> None:
    framing = Framing("lines")
    wire = b"".join(framing.encode(line) for line in lines)
    splitter = framing.splitter(text=False)
    got = []
    for i in range(0, len(wire), step):
        got += splitter.feed(wire[i : i + step])
    expected = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    assert got == expected


def test_the_codec_keeps_message_boundaries_when_asked() -> None:
    framing = Framing("lines")
    codec = WebSocketCodec(binary=False, encode_message=framing.encode)
    # A fragmented message and a whole one, in pieces.
    wire = client_frame(OP_TEXT, b"he", fin=False) + client_frame(OP_CONTINUATION, b"llo") + client_frame(OP_TEXT, b"x")
    codec.receive_data(wire[:5])
    assert list(codec.events()) == []  # nothing of an unfinished message is passed on
    codec.receive_data(wire[5:])
    assert list(codec.events()) == [Data(b"hello\nx\n")]
    assert codec.messages_received == 2


def test_without_framing_the_codec_streams() -> None:
    codec = WebSocketCodec(binary=False)
    codec.receive_data(client_frame(OP_TEXT, b"he", fin=False))
    assert list(codec.events()) == [Data(b"he")]
