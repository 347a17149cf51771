"""Unit tests for FastCGI records (wstrio._sansio.cgi.fastcgi)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wstrio._sansio.cgi import fastcgi
from wstrio._sansio.cgi.fastcgi import (
    BEGIN_REQUEST,
    END_REQUEST,
    FCGI_MAX_CONTENT,
    PARAMS,
    RESPONDER,
    STDIN,
    STDOUT,
    Record,
    RecordDecoder,
    decode_name_value_pairs,
    encode_begin_request,
    encode_end_request,
    encode_name_value_pairs,
    encode_params,
    encode_record,
    encode_stream,
    parse_begin_request,
    parse_end_request,
)


def test_constants_match_the_specification() -> None:
    assert fastcgi.FCGI_VERSION_1 == 1
    assert [
        fastcgi.BEGIN_REQUEST,
        fastcgi.ABORT_REQUEST,
        fastcgi.END_REQUEST,
        fastcgi.PARAMS,
        fastcgi.STDIN,
        fastcgi.STDOUT,
        fastcgi.STDERR,
        fastcgi.DATA,
        fastcgi.GET_VALUES,
        fastcgi.GET_VALUES_RESULT,
        fastcgi.UNKNOWN_TYPE,
    ] == list(range(1, 12))
    assert (fastcgi.RESPONDER, fastcgi.AUTHORIZER, fastcgi.FILTER) == (1, 2, 3)
    assert fastcgi.FCGI_KEEP_CONN == 1


def test_encode_record_layout_and_padding() -> None:
    record = encode_record(STDOUT, 1, b"hello")
    assert record == b"\x01\x06\x00\x01\x00\x05\x03\x00hello\x00\x00\x00"
    assert len(record) % 8 == 0


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 65535])
def test_records_are_padded_to_eight(size: int) -> None:
    record = encode_record(STDIN, 1, b"x" * size)
    assert len(record) % 8 == 0
    assert record[6] == -size % 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((256, 1, b""), "type 256"),
        ((-1, 1, b""), "type -1"),
        ((STDIN, 65536, b""), "request id 65536"),
        ((STDIN, -1, b""), "request id -1"),
        ((STDIN, 1, b"x" * 65536), "65536 bytes exceeds 65535"),
    ],
)
def test_encode_record_rejects_out_of_range(args: tuple[int, int, bytes], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_record(*args)


def test_encode_stream_empty_is_the_end_record() -> None:
    assert encode_stream(STDIN, 1, b"") == b"\x01\x05\x00\x01\x00\x00\x00\x00"


def test_encode_stream_splits_large_data() -> None:
    data = bytes(range(256)) * 600  # 153600 bytes: 65535 + 65535 + 22530
    records = RecordDecoder().feed(encode_stream(STDIN, 7, data))
    assert [len(r.content) for r in records] == [FCGI_MAX_CONTENT, FCGI_MAX_CONTENT, 22530]
    assert all(r.type == STDIN and r.request_id == 7 for r in records)
    assert b"".join(r.content for r in records) == data


def test_begin_request() -> None:
    record = encode_begin_request(1)
    assert record == b"\x01\x01\x00\x01\x00\x08\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    (decoded,) = RecordDecoder().feed(record)
    assert decoded.type == BEGIN_REQUEST
    assert parse_begin_request(decoded.content) == (RESPONDER, 0)
    keep = RecordDecoder().feed(encode_begin_request(3, role=fastcgi.FILTER, keep_conn=True))[0]
    assert keep.request_id == 3
    assert parse_begin_request(keep.content) == (fastcgi.FILTER, fastcgi.FCGI_KEEP_CONN)


def test_begin_request_errors() -> None:
    with pytest.raises(ValueError, match="role 70000"):
        encode_begin_request(1, role=70000)
    with pytest.raises(ValueError, match="8 bytes, not 3"):
        parse_begin_request(b"abc")


def test_end_request_round_trip() -> None:
    (record,) = RecordDecoder().feed(encode_end_request(1, 0xDEADBEEF, fastcgi.OVERLOADED))
    assert record.type == END_REQUEST
    assert parse_end_request(record.content) == (0xDEADBEEF, fastcgi.OVERLOADED)
    assert parse_end_request(RecordDecoder().feed(encode_end_request(2))[0].content) == (0, fastcgi.REQUEST_COMPLETE)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"app_status": -1}, "app status"), ({"app_status": 2**32}, "app status"), ({"protocol_status": 256}, "protocol")],
)
def test_end_request_errors(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_end_request(1, **kwargs)


def test_parse_end_request_rejects_wrong_length() -> None:
    with pytest.raises(ValueError, match="8 bytes, not 9"):
        parse_end_request(b"123456789")


def test_name_value_lengths() -> None:
    assert encode_name_value_pairs([(b"A", b"b")]) == b"\x01\x01Ab"
    encoded = encode_name_value_pairs([(b"N" * 127, b"v" * 128)])
    assert encoded[:5] == b"\x7f\x80\x00\x00\x80"
    assert decode_name_value_pairs(encoded) == [(b"N" * 127, b"v" * 128)]


def test_name_value_pairs_from_a_mapping_keep_raw_bytes() -> None:
    encoded = encode_name_value_pairs({"HTTP_X": "caf\udce9"})  # surrogateescape'd 0xE9
    assert decode_name_value_pairs(encoded) == [(b"HTTP_X", b"caf\xe9")]


@pytest.mark.parametrize("data", [b"\x05", b"\x80\x00", b"\x01\x80\x00\x00", b"\x02\x02ab", b"\x01"])
def test_truncated_name_value_pairs(data: bytes) -> None:
    with pytest.raises(ValueError, match="truncated"):
        decode_name_value_pairs(data)


def test_oversized_name_value_length() -> None:
    with pytest.raises(ValueError, match="too long"):
        fastcgi._encode_length(2**31)


def test_encode_params_ends_with_empty_params_record() -> None:
    environ = {"CONTENT_LENGTH": "0", "HTTP_UPGRADE": "websocket", "BIG": "x" * 70000}
    records = RecordDecoder().feed(encode_params(1, environ))
    assert all(r.type == PARAMS and r.request_id == 1 for r in records)
    assert records[-1].content == b""
    assert all(r.content for r in records[:-1])
    pairs = decode_name_value_pairs(b"".join(r.content for r in records))
    assert pairs == [(b"CONTENT_LENGTH", b"0"), (b"HTTP_UPGRADE", b"websocket"), (b"BIG", b"x" * 70000)]


def test_encode_params_empty_environ() -> None:
    assert RecordDecoder().feed(encode_params(1, {})) == [Record(PARAMS, 1, b"")]


def test_encode_params_rejects_nul() -> None:
    with pytest.raises(ValueError, match="NUL"):
        encode_params(1, {"A": "\0"})


def test_lighttpd_style_request_decodes() -> None:
    # The sequence lighttpd sends before an upgrade: BEGIN, PARAMS..., empty PARAMS,
    # and no STDIN end record.
    data = encode_begin_request(1) + encode_params(1, {"CONTENT_LENGTH": "0"})
    records = RecordDecoder().feed(data)
    assert [r.type for r in records] == [BEGIN_REQUEST, PARAMS, PARAMS]


def test_decoder_accepts_unpadded_and_odd_padding() -> None:
    # lighttpd sends no padding; other peers may pad by more than needed.
    unpadded = b"\x01\x06\x00\x01\x00\x03\x00\x00abc"
    odd = b"\x01\x06\x00\x01\x00\x01\x0f\x00z" + b"\xff" * 15
    decoder = RecordDecoder()
    assert decoder.feed(unpadded + odd) == [Record(STDOUT, 1, b"abc"), Record(STDOUT, 1, b"z")]
    assert decoder.buffered == 0


def test_decoder_holds_back_partial_records() -> None:
    decoder = RecordDecoder()
    record = encode_record(STDOUT, 1, b"hello")
    assert decoder.feed(record[:3]) == []
    assert decoder.buffered == 3
    assert decoder.feed(record[3:13]) == []  # content complete, padding missing
    assert decoder.feed(record[13:]) == [Record(STDOUT, 1, b"hello")]
    assert decoder.buffered == 0


@pytest.mark.parametrize("version", [0, 2, ord("H")])
def test_decoder_rejects_other_versions(version: int) -> None:
    decoder = RecordDecoder()
    bad = bytes([version]) + encode_record(STDOUT, 1, b"x")[1:]
    with pytest.raises(ValueError, match=f"version {version}"):
        decoder.feed(bad)
    # The stream is unusable afterwards.
    with pytest.raises(ValueError, match=f"version {version}"):
        decoder.feed(encode_record(STDOUT, 1, b"x"))


def test_decoder_rejects_an_http_answer() -> None:
    with pytest.raises(ValueError, match="version 72"):
        RecordDecoder().feed(b"HTTP/1.1 400 Bad Request\r\n\r\n")


def test_record_is_frozen_and_comparable() -> None:
    record = Record(STDOUT, 1, b"x")
    assert record == Record(type=STDOUT, request_id=1, content=b"x")
    with pytest.raises(AttributeError):
        record.content = b"y"  # type: ignore[misc]


# --- properties -----------------------------------------------------------------


@given(st.lists(st.tuples(st.binary(max_size=300), st.binary(max_size=300)), max_size=8))
def test_name_value_pairs_round_trip(pairs: list[tuple[bytes, bytes]]) -> None:
    encoded = encode_name_value_pairs(pairs)
    assert decode_name_value_pairs(encoded) == pairs


@given(st.lists(st.tuples(st.binary(max_size=300), st.binary(max_size=300)), min_size=1, max_size=8))
def test_truncated_name_value_stream_is_detected(pairs: list[tuple[bytes, bytes]]) -> None:
    encoded = encode_name_value_pairs(pairs)
    # Cutting anywhere inside the last pair leaves a truncated pair (never a silently shorter list).
    last = encode_name_value_pairs(pairs[-1:])
    for cut in range(len(encoded) - len(last) + 1, len(encoded)):
        with pytest.raises(ValueError, match="truncated"):
            decode_name_value_pairs(encoded[:cut])


@given(
    st.binary(max_size=3 * FCGI_MAX_CONTENT // 2),
    st.lists(st.integers(min_value=0), max_size=12),
    st.integers(min_value=1, max_value=0xFFFF),
)
def test_stream_round_trip_with_random_splits(data: bytes, cuts: list[int], request_id: int) -> None:
    wire = encode_stream(STDOUT, request_id, data) + encode_end_request(request_id)
    points = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    decoder = RecordDecoder()
    records: list[Record] = []
    for a, b in itertools.pairwise(points):
        records.extend(decoder.feed(wire[a:b]))
    assert decoder.buffered == 0
    assert records[-1].type == END_REQUEST
    assert all(r.type == STDOUT and r.request_id == request_id for r in records[:-1])
    assert all(len(r.content) <= FCGI_MAX_CONTENT for r in records)
    assert b"".join(r.content for r in records[:-1]) == data
