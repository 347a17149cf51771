"""Request.from_h2: HTTP/2 header blocks and extended CONNECT (RFC 8441), no event loop."""

from __future__ import annotations

import pytest

from wstrio._errors import BadRequest
from wstrio._sansio.http.request import Request, header_list_size

WS = [
    (b":method", b"CONNECT"),
    (b":protocol", b"websocket"),
    (b":scheme", b"https"),
    (b":authority", b"example.com:8443"),
    (b":path", b"/ws/chat?room=1"),
    (b"sec-websocket-version", b"13"),
    (b"origin", b"https://example.com"),
]


def test_extended_connect_is_a_websocket_presented_as_get() -> None:
    request = Request.from_h2(WS, scheme="https", client=("10.0.0.1", 5555))
    assert request.websocket
    assert request.h2
    assert request.method == "GET"
    assert request.upgrade == b"websocket"
    assert (request.path, request.query, request.target) == ("/ws/chat", "room=1", b"/ws/chat?room=1")
    assert request.host == "example.com:8443"
    assert request.headers[0] == (b"host", b"example.com:8443")
    assert request.header(b"origin") == b"https://example.com"
    assert request.scheme == "https"
    assert request.client == ("10.0.0.1", 5555)
    assert all(not name.startswith(b":") for name, _ in request.headers)


def test_ordinary_get() -> None:
    request = Request.from_h2(
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/a/../b.txt"), (b"host", b"h"), (b"x", b"1")],
        scheme="http",
    )
    assert (request.method, request.path, request.websocket, request.host) == ("GET", "/b.txt", False, "h")
    assert request.http_version == "2"


def test_authority_wins_over_host() -> None:
    request = Request.from_h2(
        [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/"), (b"host", b"b")]
    )
    assert request.header_values(b"host") == [b"a"]


def test_protocol_name_is_case_insensitive() -> None:
    headers = [(k, b"WebSocket" if k == b":protocol" else v) for k, v in WS]
    assert Request.from_h2(headers).websocket


def _status(headers: list[tuple[bytes, bytes]], **kwargs: int) -> int:
    with pytest.raises(BadRequest) as info:
        Request.from_h2(headers, **kwargs)  # type: ignore[arg-type]
    return info.value.status


def _without(name: bytes) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in WS if k != name]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param([(k, b"chat" if k == b":protocol" else v) for k, v in WS], 405, id="other-protocol"),
        pytest.param(_without(b":protocol"), 405, id="plain-connect"),
        pytest.param(_without(b":path"), 400, id="no-path"),
        pytest.param(_without(b":scheme"), 400, id="no-scheme"),
        pytest.param([(k, b"GET" if k == b":method" else v) for k, v in WS], 400, id="protocol-without-connect"),
        pytest.param(_without(b":method"), 400, id="no-method"),
        pytest.param([*WS, (b"upgrade", b"websocket")], 400, id="upgrade-header"),
        pytest.param([*WS, (b"connection", b"upgrade")], 400, id="connection-header"),
        pytest.param([*WS, (b"transfer-encoding", b"chunked")], 400, id="transfer-encoding"),
        pytest.param([*WS, (b"te", b"gzip")], 400, id="te-not-trailers"),
        pytest.param([*WS, (b"Origin", b"x")], 400, id="upper-case-name"),
        pytest.param([*WS, (b"x", b" padded")], 400, id="value-whitespace"),
        pytest.param([*WS, (b"x", b"a\r\nb")], 400, id="value-crlf"),
        pytest.param([*WS, (b"", b"x")], 400, id="empty-name"),
        pytest.param([*WS, (b":status", b"200")], 400, id="response-pseudo"),
        pytest.param([*WS, (b":method", b"GET")], 400, id="pseudo-after-regular"),
        pytest.param([WS[0], *WS], 400, id="duplicate-pseudo"),
        pytest.param([(b":method", b"G T"), (b":scheme", b"http"), (b":path", b"/")], 400, id="method-not-token"),
        pytest.param([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"x")], 400, id="path-not-origin-form"),
    ],
)
def test_malformed_and_refused(headers: list[tuple[bytes, bytes]], status: int) -> None:
    assert _status(headers) == status


def test_te_trailers_is_allowed() -> None:
    assert Request.from_h2([*WS, (b"te", b"trailers")]).header(b"te") == b"trailers"


def test_limits_give_431() -> None:
    size = header_list_size(WS)
    assert Request.from_h2(WS, max_header_list_size=size).websocket
    assert _status(WS, max_header_list_size=size - 1) == 431
    assert _status([*WS, (b"a", b"1"), (b"b", b"2")], max_headers=3) == 431


def test_header_list_size_counts_as_settings_does() -> None:
    assert header_list_size([(b"ab", b"cde")]) == 2 + 3 + 32
