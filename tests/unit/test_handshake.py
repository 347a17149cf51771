"""Unit tests for the wstunnel handshake policy (wstrio._sansio.websocket.handshake)."""

from __future__ import annotations

import base64

import attrs
import pytest

from wstrio._config import Backend, FrameType, Route
from wstrio._errors import HandshakeRejected
from wstrio._sansio.http.request import Request
from wstrio._sansio.websocket.handshake import WebSocketAccept, accept_headers, check_websocket, origin_allowed

RFC_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
WS_HEADERS = [
    (b"Host", b"example.com"),
    (b"Upgrade", b"websocket"),
    (b"Connection", b"Upgrade"),
    (b"Origin", b"http://www.example.com"),
    (b"Sec-WebSocket-Key", RFC_KEY),
    (b"Sec-WebSocket-Version", b"13"),
]
VERSION_HINT = (b"sec-websocket-version", b"13")


def _route(*, origins: tuple[str, ...] = (), frame_type: FrameType = "text") -> Route:
    return Route(
        handler="wstunnel",
        path="/",
        backends=(Backend(host="127.0.0.1", port=1),),
        origins=origins,
        frame_type=frame_type,
    )


def _request(*changes: tuple[bytes, bytes | None], extra: tuple[tuple[bytes, bytes], ...] = ()) -> Request:
    """The RFC 6455 example handshake with headers replaced (value None = removed)."""
    headers = list(WS_HEADERS)
    for name, value in changes:
        headers = [(k, v) for k, v in headers if k.lower() != name.lower()]
        if value is not None:
            headers.append((name, value))
    # Built around from_h1's own checks (a missing or blank Host is its 400
    # already), so that the handshake policy is what is tested.
    request = Request.from_h1(b"GET", b"/", WS_HEADERS, b"1.1")
    return attrs.evolve(request, headers=tuple((k.lower(), v) for k, v in [*headers, *extra]))


def _h2_request(*extra: tuple[bytes, bytes]) -> Request:
    headers = ((b"host", b"example.com"), (b"sec-websocket-version", b"13"), *extra)
    return Request(method="GET", target=b"/", path="/", query="", headers=headers, http_version="2", websocket=True)


def _rejected(request: Request, route: Route | None = None) -> HandshakeRejected:
    with pytest.raises(HandshakeRejected) as info:
        check_websocket(request, route or _route())
    return info.value


# -- success -------------------------------------------------------------------------


def test_valid_handshake_is_accepted() -> None:
    accept = check_websocket(_request(), _route())
    assert accept == WebSocketAccept(binary=False, subprotocol=None, key=RFC_KEY)


def test_accept_token_matches_rfc6455_example() -> None:
    accept = check_websocket(_request(), _route())
    headers = accept_headers(accept, h2=False)
    assert (b"sec-websocket-accept", RFC_ACCEPT) in headers
    assert (b"upgrade", b"websocket") in headers
    assert [v for k, v in headers if k == b"connection"] == [b"Upgrade"]
    assert not any(k == b"sec-websocket-protocol" for k, _ in headers)


def test_key_whitespace_is_trimmed_before_the_accept_token() -> None:
    accept = check_websocket(_request((b"Sec-WebSocket-Key", b" " + RFC_KEY + b" ")), _route())
    assert accept.key == RFC_KEY
    assert (b"sec-websocket-accept", RFC_ACCEPT) in accept_headers(accept, h2=False)


def test_h2_needs_no_key_and_sends_no_accept() -> None:
    accept = check_websocket(_h2_request(), _route())
    assert accept.key is None
    assert accept_headers(accept, h2=True) == []


def test_h2_subprotocol_header() -> None:
    accept = check_websocket(_h2_request((b"sec-websocket-protocol", b"binary")), _route())
    assert accept_headers(accept, h2=True) == [(b"sec-websocket-protocol", b"binary")]


# -- refusals, in lighttpd's order ----------------------------------------------------------


@pytest.mark.parametrize("host", [None, b"", b"   "])
def test_missing_or_blank_host_is_400(host: bytes | None) -> None:
    err = _rejected(_request((b"Host", host)))
    assert err.status == 400
    assert "Host" in str(err)


@pytest.mark.parametrize("second", [b"dGhlIHNhbXBsZSBub25jZQ==", b"x3JJHMbDL1EzLkh9GBhXDw=="])
def test_duplicated_key_is_400(second: bytes) -> None:
    err = _rejected(_request(extra=((b"Sec-WebSocket-Key", second),)))
    assert err.status == 400
    assert "more than one Sec-WebSocket-Key" in str(err)


def test_host_is_checked_before_version() -> None:
    err = _rejected(_request((b"Host", None), (b"Sec-WebSocket-Version", None)))
    assert err.status == 400
    assert err.headers == ()


@pytest.mark.parametrize("origin", [None, b"", b"  "])
def test_missing_origin_is_400_when_origins_set(origin: bytes | None) -> None:
    err = _rejected(_request((b"Origin", origin)), _route(origins=("example.com",)))
    assert err.status == 400
    assert "Origin" in str(err)


def test_missing_origin_is_fine_without_origins() -> None:
    assert check_websocket(_request((b"Origin", None)), _route()).key == RFC_KEY


def test_refused_origin_is_403() -> None:
    err = _rejected(_request((b"Origin", b"http://evil.com")), _route(origins=("example.com",)))
    assert err.status == 403
    assert "http://evil.com" in str(err)


def test_allowed_origin_passes() -> None:
    assert check_websocket(_request(), _route(origins=("example.com",))).key == RFC_KEY


def test_origin_is_checked_before_version() -> None:
    request = _request((b"Origin", b"http://evil.com"), (b"Sec-WebSocket-Version", b"8"))
    assert _rejected(request, _route(origins=("example.com",))).status == 403


@pytest.mark.parametrize("version", [None, b"8", b"12", b"14", b"", b"thirteen", b"13, 8"])
def test_bad_version_is_400_with_version_header(version: bytes | None) -> None:
    err = _rejected(_request((b"Sec-WebSocket-Version", version)))
    assert err.status == 400
    assert VERSION_HINT in err.headers


@pytest.mark.parametrize("version", [b"13", b" 13 ", b"013"])
def test_version_13_spellings_accepted(version: bytes) -> None:
    assert check_websocket(_request((b"Sec-WebSocket-Version", version)), _route()).key == RFC_KEY


def test_version_is_checked_before_key() -> None:
    err = _rejected(_request((b"Sec-WebSocket-Version", b"8"), (b"Sec-WebSocket-Key", None)))
    assert VERSION_HINT in err.headers


def test_h2_version_is_checked_too() -> None:
    request = Request(
        method="GET", target=b"/", path="/", query="", headers=((b"host", b"h"),), http_version="2", websocket=True
    )
    err = _rejected(request)
    assert err.status == 400
    assert VERSION_HINT in err.headers


@pytest.mark.parametrize(
    "key",
    [
        None,
        b"",
        b"not base64!",
        base64.b64encode(b"x" * 15),
        base64.b64encode(b"x" * 17),
        RFC_KEY.rstrip(b"="),
        RFC_KEY[:-4] + b"@@==",
    ],
)
def test_bad_key_is_400(key: bytes | None) -> None:
    err = _rejected(_request((b"Sec-WebSocket-Key", key)))
    assert err.status == 400
    assert "Sec-WebSocket-Key" in str(err)
    assert VERSION_HINT not in err.headers


# -- subprotocols and frame type ---------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "frame_type", "binary", "subprotocol"),
    [
        (None, "text", False, None),
        (None, "binary", True, None),
        (b"binary", "text", True, "binary"),
        (b"binary", "binary", True, "binary"),
        (b"base64", "text", False, "base64"),
        # lighttpd quirk kept: the configured frame type wins, base64 is still acknowledged.
        (b"base64", "binary", True, "base64"),
        (b"base64, binary", "text", True, "binary"),
        (b"BINARY", "text", True, "binary"),
        (b"chat", "text", False, None),
        (b"chat", "binary", True, None),
        (b"chat, superchat", "text", False, None),
    ],
)
def test_subprotocols(offered: bytes | None, frame_type: FrameType, binary: bool, subprotocol: str | None) -> None:
    accept = check_websocket(_request((b"Sec-WebSocket-Protocol", offered)), _route(frame_type=frame_type))
    assert accept.binary is binary
    assert accept.subprotocol == subprotocol
    echoed = [v for k, v in accept_headers(accept, h2=False) if k == b"sec-websocket-protocol"]
    assert echoed == ([subprotocol.encode()] if subprotocol else [])


def test_binary_frame_type_never_answers_an_unoffered_subprotocol() -> None:
    """lighttpd 1.4.69 answered ``binary`` unasked, which noVNC and browsers reject."""
    accept = check_websocket(_request(), _route(frame_type="binary"))
    assert accept.binary
    assert not any(k == b"sec-websocket-protocol" for k, _ in accept_headers(accept, h2=False))


def test_subprotocols_across_several_header_lines() -> None:
    request = _request(extra=((b"Sec-WebSocket-Protocol", b"chat"), (b"Sec-WebSocket-Protocol", b"binary")))
    assert check_websocket(request, _route()).subprotocol == "binary"


# -- origin_allowed ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "entry", "expected"),
    [
        # lighttpd suffix rule: equal, or ends with "." + entry.
        ("http://www.example.com", "example.com", True),
        ("https://a.b.example.com", "example.com", True),
        ("example.com", "example.com", True),
        ("http://example.com", "example.com", False),
        ("http://wwwexample.com", "example.com", False),
        ("http://www.example.com.evil.net", "example.com", False),
        ("http://evil.localhost:8080", "localhost:8080", True),
        ("http://localhost:8080", "localhost:8080", False),
        ("HTTP://WWW.EXAMPLE.COM", "example.com", True),
        ("http://www.example.com", "EXAMPLE.com", True),
        # exact scheme://host[:port]
        ("http://example.com", "http://example.com", True),
        ("http://example.com:80", "http://example.com", True),
        ("http://example.com", "http://example.com:80", True),
        ("https://example.com:443", "https://example.com", True),
        ("HTTP://Example.COM", "http://example.com", True),
        ("http://example.com:8080", "http://example.com", False),
        ("http://example.com", "http://example.com:8080", False),
        ("https://example.com", "http://example.com", False),
        ("http://www.example.com", "http://example.com", False),
        ("http://evil.localhost:8080", "http://localhost:8080", False),
        ("http://localhost:8080", "http://localhost:8080", True),
        ("http://example.com:bad", "http://example.com", False),
        ("garbage", "http://example.com", False),
        ("null", "http://example.com", False),
        # the literal null origin (file:// pages, sandboxed frames)
        ("null", "null", True),
        ("http://null", "null", False),
    ],
)
def test_origin_allowed(origin: str, entry: str, expected: bool) -> None:
    assert origin_allowed(origin, (entry,)) is expected


def test_origin_allowed_any_entry() -> None:
    allowed = ("http://example.com", "example.com")
    assert origin_allowed("http://example.com", allowed)
    assert origin_allowed("https://www.example.com", allowed)
    assert not origin_allowed("https://example.com", allowed)
    assert not origin_allowed("http://example.org", allowed)


def test_origin_allowed_empty_list_allows_nothing() -> None:
    assert not origin_allowed("http://example.com", ())
