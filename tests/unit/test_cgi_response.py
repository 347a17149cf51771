"""Unit tests for the CGI response-head parser (wstrio._sansio.cgi.response)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wstrio._errors import BackendError
from wstrio._sansio.cgi.response import CgiResponseHead, CgiResponseParser

WS_ECHO_HEAD = (
    b"Status: 101\n"
    b"Upgrade: WebSocket\n"
    b"Connection: Upgrade\n"
    b"Sec-WebSocket-Origin: http://example.com\n"
    b"Sec-WebSocket-Location: ws://example.com/ws/ws_echo.py\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\n\n"
)


def parse(data: bytes, limit: int | None = None) -> CgiResponseHead:
    parser = CgiResponseParser() if limit is None else CgiResponseParser(limit)
    head = parser.feed(data)
    assert head is not None
    return head


def rejected(data: bytes, limit: int | None = None) -> BackendError:
    parser = CgiResponseParser() if limit is None else CgiResponseParser(limit)
    with pytest.raises(BackendError) as info:
        parser.feed(data)
    assert info.value.status == 502
    return info.value


def test_ws_echo_upgrade() -> None:
    head = parse(WS_ECHO_HEAD + b"\x81\x02hi")
    assert head.status == 101
    assert head.reason == b"Switching Protocols"
    assert head.is_upgrade
    assert head.header(b"upgrade") == b"WebSocket"
    assert head.header(b"status") is None
    assert [name for name, _ in head.headers] == [
        b"upgrade",
        b"connection",
        b"sec-websocket-origin",
        b"sec-websocket-location",
        b"sec-websocket-accept",
    ]
    assert head.header(b"sec-websocket-accept") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert head.rest == b"\x81\x02hi"
    assert head.local_redirect is None


def test_upgrade_before_status_is_still_an_upgrade() -> None:
    # lighttpd drops an Upgrade seen before Status: 101; we read the whole head first.
    head = parse(b"Upgrade: websocket\r\nConnection: Upgrade\r\nStatus: 101 Switching Protocols\r\n\r\n")
    assert head.status == 101
    assert head.is_upgrade
    assert head.header(b"upgrade") == b"websocket"


def test_101_without_upgrade_is_not_an_upgrade() -> None:
    head = parse(b"Status: 101\n\n")
    assert head.status == 101
    assert not head.is_upgrade


def test_upgrade_header_on_200_is_not_an_upgrade() -> None:
    head = parse(b"Status: 200\nUpgrade: websocket\n\n")
    assert not head.is_upgrade
    assert head.header(b"upgrade") == b"websocket"


def test_status_204_with_reason() -> None:
    head = parse(b"Status: 204 Nothing Here\n\n")
    assert (head.status, head.reason) == (204, b"Nothing Here")
    assert head.headers == ()


def test_unknown_status_has_empty_reason() -> None:
    assert parse(b"Status: 599\n\n").reason == b""


def test_plain_200_default() -> None:
    head = parse(b"Content-Type: text/plain\r\n\r\nhello")
    assert (head.status, head.reason) == (200, b"OK")
    assert head.headers == ((b"content-type", b"text/plain"),)
    assert head.rest == b"hello"


def test_no_content_type_no_status_is_still_200() -> None:
    head = parse(b"X-Custom: 1\n\nbody")
    assert head.status == 200
    assert head.rest == b"body"


@pytest.mark.parametrize("line", [b"HTTP/1.1 101 Switching Protocols", b"HTTP/1.0 101", b"HTTP/1.1\t101\tGo"])
def test_nph_status_line(line: bytes) -> None:
    head = parse(line + b"\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n")
    assert head.status == 101
    assert head.is_upgrade
    assert head.reason in (b"Switching Protocols", b"Go")


def test_nph_status_line_only() -> None:
    head = parse(b"HTTP/1.1 204 No Content\n\n")
    assert head.status == 204
    assert head.headers == ()


def test_status_field_wins_over_nph_line() -> None:
    assert parse(b"HTTP/1.1 200 OK\nStatus: 403\n\n").status == 403


def test_local_redirect() -> None:
    head = parse(b"Location: /other/page?x=1\n\n")
    assert head.local_redirect == "/other/page?x=1"
    assert head.status == 302


def test_local_redirect_keeps_raw_bytes() -> None:
    head = parse(b"Location: /caf\xe9\n\n")
    assert head.local_redirect is not None
    assert head.local_redirect.encode("latin-1") == b"/caf\xe9"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"Location: http://example.com/\n\n", 302),
        # A network-path reference names another host: a client redirect.
        (b"Location: //evil.example/\n\n", 302),
        # Another field besides Location: not a local redirect (RFC 3875 6.2.2).
        (b"Location: /x\nContent-Type: text/html\n\n", 302),
        # An explicit status makes it a client redirect with that status.
        (b"Status: 301\nLocation: /x\n\n", 301),
        (b"HTTP/1.1 303 See Other\nLocation: /x\n\n", 303),
    ],
)
def test_client_redirects(data: bytes, status: int) -> None:
    head = parse(data)
    assert head.local_redirect is None
    assert head.status == status
    assert head.header(b"location") is not None


def test_interim_responses_are_skipped() -> None:
    head = parse(b"Status: 103\nLink: </a.css>\n\nHTTP/1.1 100 Continue\n\nStatus: 101\nUpgrade: websocket\n\nframes")
    assert head.status == 101
    assert head.headers == ((b"upgrade", b"websocket"),)
    assert head.rest == b"frames"


def test_byte_by_byte_feeding() -> None:
    parser = CgiResponseParser()
    data = WS_ECHO_HEAD + b"tail"
    results = [parser.feed(data[i : i + 1]) for i in range(len(WS_ECHO_HEAD))]
    assert all(result is None for result in results[:-1])
    head = results[-1]
    assert head is not None
    assert head.is_upgrade
    assert head.rest == b""


@given(st.lists(st.integers(min_value=0, max_value=len(WS_ECHO_HEAD) + 4), max_size=8))
def test_any_split_gives_the_same_head(cuts: list[int]) -> None:
    data = WS_ECHO_HEAD + b"tail"
    points = sorted({0, len(data), *cuts})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    parser = CgiResponseParser()
    head = None
    while head is None:
        head = parser.feed(chunks.pop(0))
    assert head.status == 101
    assert head.headers == parse(data).headers
    # What followed the blank line in the completing chunk, then the chunks
    # not yet fed, are exactly the body.
    assert head.rest + b"".join(chunks) == b"tail"


def test_feed_after_the_head_is_an_error() -> None:
    parser = CgiResponseParser()
    assert parser.feed(b"Status: 200\n\n") is not None
    with pytest.raises(RuntimeError, match="already parsed"):
        parser.feed(b"more")


def test_empty_feed_is_harmless() -> None:
    parser = CgiResponseParser()
    assert parser.feed(b"") is None
    assert parser.feed(b"Status: 204\n") is None
    assert parser.feed(b"") is None
    head = parser.feed(b"\n")
    assert head is not None
    assert head.status == 204


def test_invalid_fields_are_skipped_like_lighttpd() -> None:
    head = parse(b"Good: 1\nBad Name: 2\n: empty\nX-Ctl: a\x01b\nAlso-Good:  spaced \t\n\n")
    assert head.headers == ((b"good", b"1"), (b"also-good", b"spaced"))


# --- garbage -> 502 ------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"this is not a header\n\n", "without a colon"),
        (b"<html><body>oops</body></html>\n\n", "without a colon"),
        (b"Status: abc\n\n", "malformed Status"),
        (b"Status: 1010\n\n", "malformed Status"),
        (b"Status: 099\n\n", "outside 100-599"),
        (b"Status: 600\n\n", "outside 100-599"),
        (b"Status:\n\n", "malformed Status"),
        (b"Status: 200 O\x01K\n\n", "control characters"),
        (b"Status: 200\nStatus: 101\n\n", "more than one Status"),
        (b"HTTP/2 200\n\n", "malformed status line"),
        (b"HTTP/1.1 abc\n\n", "malformed status line"),
        (b"X-A: 1\n  folded\n\n", "line folding"),
        (b"\n", "no header fields"),
        (b"\r\nbody", "no header fields"),
    ],
)
def test_garbage_is_a_502(data: bytes, message: str) -> None:
    error = rejected(data)
    assert message in str(error)


def test_head_over_the_limit_is_a_502() -> None:
    error = rejected(b"X-Big: " + b"a" * 200, limit=100)
    assert "larger than 100 bytes" in str(error)


def test_head_over_the_limit_arriving_complete_is_a_502() -> None:
    rejected(b"X-Big: " + b"a" * 200 + b"\n\n", limit=100)


def test_head_over_the_limit_across_feeds_is_a_502() -> None:
    parser = CgiResponseParser(limit=64)
    for _ in range(5):
        assert parser.feed(b"X-A: 123456\n") is None  # 12 bytes each: 60 so far
    with pytest.raises(BackendError):
        parser.feed(b"X-A: 123456\n")  # 72 > 64


def test_head_exactly_at_the_limit_is_accepted() -> None:
    data = b"X-A: 1\n\n"
    assert parse(data, limit=len(data)).headers == ((b"x-a", b"1"),)
    rejected(data, limit=len(data) - 1)


def test_default_limit_is_64_kib() -> None:
    big = b"X-Big: " + b"a" * (64 * 1024) + b"\n\n"
    rejected(big)
    assert parse(b"X-Big: " + b"a" * 60000 + b"\n\n").status == 200


def test_silly_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        CgiResponseParser(limit=1)
