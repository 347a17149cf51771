"""Unit tests for SCGI request headers (wstrio._sansio.cgi.scgi)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wstrio._sansio.cgi.environ import build_cgi_environ
from wstrio._sansio.cgi.scgi import decode_request_headers, encode_request_headers
from wstrio._sansio.http.request import Request


def test_encoding_matches_the_spec_example() -> None:
    # The example of the SCGI specification (python.ca/scgi/protocol.txt).
    environ = {"CONTENT_LENGTH": "27", "SCGI": "1", "REQUEST_METHOD": "POST", "REQUEST_URI": "/deepthought"}
    assert encode_request_headers(environ) == (
        b"70:CONTENT_LENGTH\x0027\x00SCGI\x001\x00REQUEST_METHOD\x00POST\x00REQUEST_URI\x00/deepthought\x00,"
    )


def test_content_length_first_and_scgi_second() -> None:
    encoded = encode_request_headers({"REQUEST_METHOD": "GET", "CONTENT_LENGTH": "0", "X": "y"})
    assert encoded.startswith(b"47:CONTENT_LENGTH\x000\x00SCGI\x001\x00REQUEST_METHOD\x00GET\x00")
    environ, consumed = decode_request_headers(encoded) or ({}, 0)
    assert list(environ) == ["CONTENT_LENGTH", "SCGI", "REQUEST_METHOD", "X"]
    assert consumed == len(encoded)


def test_scgi_value_in_environ_is_replaced() -> None:
    encoded = encode_request_headers({"CONTENT_LENGTH": "0", "SCGI": "2"})
    assert encoded == b"24:CONTENT_LENGTH\x000\x00SCGI\x001\x00,"


def test_full_cgi_environment_round_trips() -> None:
    request = Request.from_h1(
        b"GET",
        b"/scgi/app?x=1",
        [(b"Host", b"h"), (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"), (b"X-Latin", b"caf\xe9")],
        b"1.1",
        client=("127.0.0.1", 40000),
        server=("127.0.0.1", 8080),
    )
    environ = build_cgi_environ(
        request,
        script_name="/scgi/app",
        path_info="",
        script_filename=None,
        document_root=None,
        server_software="wstrio",
        content_length=None,
    )
    encoded = encode_request_headers(environ)
    result = decode_request_headers(encoded + b"body")
    assert result is not None
    decoded, consumed = result
    assert encoded[consumed - 1 : consumed] == b","
    assert consumed == len(encoded)
    assert decoded == {**environ, "SCGI": "1"}
    assert decoded["HTTP_UPGRADE"] == "websocket"
    assert "caf\xe9".encode("latin-1") in encoded  # the raw byte, not UTF-8


def test_lighttpd_order_decodes() -> None:
    # lighttpd sends SCGI=1 last; we accept it anywhere after CONTENT_LENGTH.
    content = b"CONTENT_LENGTH\x000\x00REQUEST_METHOD\x00GET\x00SCGI\x001\x00"
    result = decode_request_headers(b"%d:%s," % (len(content), content))
    assert result is not None
    assert result[0]["SCGI"] == "1"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"REQUEST_METHOD": "GET"}, "requires CONTENT_LENGTH"),
        ({"CONTENT_LENGTH": "-1"}, "decimal number"),
        ({"CONTENT_LENGTH": "x"}, "decimal number"),
        ({"CONTENT_LENGTH": "\u0661"}, "decimal number"),  # a non-ASCII digit
        ({"CONTENT_LENGTH": "0", "A": "a\0b"}, "NUL"),
        ({"CONTENT_LENGTH": "0", "A=B": "x"}, "'=' or NUL"),
    ],
)
def test_encoding_errors(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_request_headers(environ)


@pytest.mark.parametrize("cut", range(0, 40))
def test_incomplete_data_gives_none(cut: int) -> None:
    encoded = encode_request_headers({"CONTENT_LENGTH": "0", "A": "b"})
    assert len(encoded) == 32
    result = decode_request_headers(encoded[:cut])
    if cut < len(encoded):
        assert result is None
    else:
        assert result is not None
        assert result[1] == len(encoded)


def _netstring(content: bytes) -> bytes:
    return b"%d:%s," % (len(content), content)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"x:", "not a decimal number"),
        (b"1x", "not a decimal number"),
        (b":abc,", "no length"),
        (b"01:a,", "leading zero"),
        (b"3:abc;", "does not end with ','"),
        (b"1234567", "larger than"),
        (b"70000:", "larger than"),
        (_netstring(b"CONTENT_LENGTH\x000"), "end with a NUL"),
        (_netstring(b""), "end with a NUL"),
        (_netstring(b"CONTENT_LENGTH\x000\x00SCGI\x00"), "without a value"),
        (_netstring(b"CONTENT_LENGTH\x000\x00SCGI\x001\x00\x00x\x00"), "empty name"),
        (_netstring(b"CONTENT_LENGTH\x000\x00SCGI\x001\x00SCGI\x001\x00"), "appears twice"),
        (_netstring(b"SCGI\x001\x00CONTENT_LENGTH\x000\x00"), "start with CONTENT_LENGTH"),
        (_netstring(b"CONTENT_LENGTH\x00x\x00SCGI\x001\x00"), "not a decimal number"),
        (_netstring(b"CONTENT_LENGTH\x000\x00"), "lack SCGI=1"),
        (_netstring(b"CONTENT_LENGTH\x000\x00SCGI\x000\x00"), "lack SCGI=1"),
    ],
)
def test_decoding_errors(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_request_headers(data)


def test_max_size_is_configurable() -> None:
    encoded = encode_request_headers({"CONTENT_LENGTH": "0", "A": "b" * 100})
    assert decode_request_headers(encoded, max_size=200) is not None
    with pytest.raises(ValueError, match="larger than 50"):
        decode_request_headers(encoded, max_size=50)


def test_zero_length_netstring_is_accepted_as_a_netstring() -> None:
    # "0:," is a valid netstring, but an empty header block is not valid SCGI.
    with pytest.raises(ValueError, match="NUL"):
        decode_request_headers(b"0:,")


def test_accepts_bytearray_and_memoryview() -> None:
    encoded = encode_request_headers({"CONTENT_LENGTH": "5"})
    assert decode_request_headers(bytearray(encoded)) == decode_request_headers(memoryview(encoded))


# codec="utf-8" leaves out surrogates, which no environment string can hold
# (except surrogateescape'd bytes, tested in test_cgi_env).
names = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\0="), min_size=1)
values = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\0"))


@given(
    st.dictionaries(names, values, max_size=10),
    st.integers(min_value=0, max_value=10**12),
    st.binary(max_size=20),
)
def test_round_trip(extra: dict[str, str], content_length: int, body: bytes) -> None:
    environ = {"CONTENT_LENGTH": str(content_length), **extra}
    encoded = encode_request_headers(environ)
    result = decode_request_headers(encoded + body, max_size=len(encoded))
    assert result is not None
    decoded, consumed = result
    assert (encoded + body)[consumed:] == body
    expected = {"CONTENT_LENGTH": str(content_length), "SCGI": "1"}
    expected.update((k, v) for k, v in environ.items() if k not in expected)
    assert decoded == expected
    assert list(decoded)[:2] == ["CONTENT_LENGTH", "SCGI"]


@given(st.binary(max_size=60))
def test_decoder_never_crashes(data: bytes) -> None:
    try:
        result = decode_request_headers(data)
    except ValueError:
        return
    if result is not None:
        assert 0 < result[1] <= len(data)
