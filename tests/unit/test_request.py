"""Unit tests for the version-independent request value (wstrio._sansio.http.request)."""

from __future__ import annotations

import pytest

from wstrio._errors import BadRequest
from wstrio._sansio.http.request import Request, check_field_value, check_host, has_token, normalize_target

WS_HEADERS = [
    (b"Host", b"example.com"),
    (b"Upgrade", b"websocket"),
    (b"Connection", b"Upgrade"),
    (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"Sec-WebSocket-Version", b"13"),
]


def _h1(
    headers: list[tuple[bytes, bytes]] = WS_HEADERS,
    *,
    method: bytes = b"GET",
    target: bytes = b"/ws/",
    version: bytes = b"1.1",
) -> Request:
    return Request.from_h1(method, target, headers, version)


def _replace(name: bytes, value: bytes | None) -> list[tuple[bytes, bytes]]:
    headers = [(k, v) for k, v in WS_HEADERS if k.lower() != name.lower()]
    if value is not None:
        headers.append((name, value))
    return headers


# -- normalize_target ------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        (b"/", "/", ""),
        (b"/index.html", "/index.html", ""),
        (b"/a/b/../c", "/a/c", ""),
        (b"/a/./b", "/a/b", ""),
        (b"/a/b/..", "/a/", ""),
        (b"/a/b/.", "/a/b/", ""),
        (b"/a/b/", "/a/b/", ""),
        (b"/.", "/", ""),
        (b"//a//b", "/a/b", ""),
        (b"/a/%2e%2e/b", "/b", ""),
        (b"/a/%2E%2E/b", "/b", ""),
        (b"/a/.%2e/b", "/b", ""),
        (b"/caf%C3%A9", "/caf\u00e9", ""),
        (b"/a%20b", "/a b", ""),
        (b"/a#frag", "/a", ""),
        (b"/a/..?q=1", "/", "q=1"),
    ],
)
def test_normalize_target(target: bytes, path: str, query: str) -> None:
    assert normalize_target(target) == (path, query)


@pytest.mark.parametrize(
    "target",
    [b"/..", b"/../etc/passwd", b"/a/../..", b"/a/../../b", b"/%2e%2e/x", b"/a/%2e%2e/%2E%2E/x", b"/./.."],
)
def test_climbing_above_the_root_is_400(target: bytes) -> None:
    with pytest.raises(BadRequest, match="climbs above the root") as info:
        normalize_target(target)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        (b"/a%00b", "NUL"),
        (b"/%00", "NUL"),
        (b"/%ff", "not valid UTF-8"),
        (b"/caf%C3", "not valid UTF-8"),
        (b"/\xe9", "not valid UTF-8"),
        (b"*", "asterisk"),
        (b"http://example.com/a", "must start with '/'"),
        (b"", "must start with '/'"),
        (b"a/b", "must start with '/'"),
    ],
)
def test_unusable_targets_are_400(target: bytes, fragment: str) -> None:
    with pytest.raises(BadRequest, match=fragment) as info:
        normalize_target(target)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("target", "query"),
    [
        (b"/a?x=%20&y=..", "x=%20&y=.."),
        (b"/a?", ""),
        (b"/a?b?c", "b?c"),
        (b"/a?p=/../x", "p=/../x"),
        (b"/a?%2e%2e", "%2e%2e"),
    ],
)
def test_query_is_kept_raw(target: bytes, query: str) -> None:
    path, got = normalize_target(target)
    assert path == "/a"
    assert got == query


def test_query_dots_do_not_touch_the_path() -> None:
    assert normalize_target(b"/a/b?../../..") == ("/a/b", "../../..")


# -- has_token ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "token", "expected"),
    [
        (b"Upgrade", b"upgrade", True),
        (b"UPGRADE", b"upgrade", True),
        (b"upgrade", b"Upgrade", True),
        (b"keep-alive, Upgrade", b"upgrade", True),
        (b"keep-alive,upgrade", b"upgrade", True),
        (b"  upgrade  ", b"upgrade", True),
        (b"upgrade;q=1", b"upgrade", True),
        (b"keep-alive", b"upgrade", False),
        (b"upgraded", b"upgrade", False),
        (b"x-upgrade", b"upgrade", False),
        (b"", b"upgrade", False),
        (None, b"upgrade", False),
        (b"websocket, h2c", b"websocket", True),
    ],
)
def test_has_token(value: bytes | None, token: bytes, expected: bool) -> None:
    assert has_token(value, token) is expected


# -- Request.from_h1 --------------------------------------------------------------------------


def test_websocket_request_is_detected() -> None:
    request = _h1()
    assert request.websocket
    assert request.method == "GET"
    assert request.path == "/ws/"
    assert request.http_version == "1.1"
    assert request.upgrade == b"websocket"
    assert not request.h2


def test_header_names_are_lowercased_and_values_kept() -> None:
    request = _h1()
    assert request.header(b"sec-websocket-key") == b"dGhlIHNhbXBsZSBub25jZQ=="
    assert request.host == "example.com"
    assert request.header(b"Host") is None
    assert request.header(b"missing") is None


def test_header_values_keeps_every_value_in_order() -> None:
    request = _h1([*WS_HEADERS, (b"X-A", b"1"), (b"x-a", b"2")])
    assert request.header_values(b"x-a") == [b"1", b"2"]
    assert request.header(b"x-a") == b"1"


def test_host_is_empty_without_header() -> None:
    assert _h1(_replace(b"Host", None), version=b"1.0").host == ""


def test_target_and_query() -> None:
    request = _h1(target=b"/ws/%2e%2e/chat?room=1")
    assert request.target == b"/ws/%2e%2e/chat?room=1"
    assert request.path == "/chat"
    assert request.query == "room=1"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"Upgrade", b"WebSocket"),
        (b"Upgrade", b"WEBSOCKET"),
        (b"Connection", b"keep-alive, Upgrade"),
        (b"Connection", b"upgrade"),
        (b"Connection", b"Upgrade, keep-alive"),
        (b"Upgrade", b"h2c, websocket"),
    ],
)
def test_websocket_tokens_match_case_insensitively(name: bytes, value: bytes) -> None:
    assert _h1(_replace(name, value)).websocket


def test_connection_tokens_across_several_header_lines() -> None:
    headers = [*_replace(b"Connection", b"keep-alive"), (b"Connection", b"Upgrade")]
    assert _h1(headers).websocket


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"Upgrade", None),
        (b"Upgrade", b"h2c"),
        (b"Upgrade", b"websockets"),
        (b"Connection", None),
        (b"Connection", b"keep-alive"),
        (b"Connection", b"upgraded"),
    ],
)
def test_not_websocket_without_both_tokens(name: bytes, value: bytes | None) -> None:
    assert not _h1(_replace(name, value)).websocket


def test_http10_is_not_websocket() -> None:
    request = _h1(version=b"1.0")
    assert not request.websocket
    assert request.http_version == "1.0"


@pytest.mark.parametrize("method", [b"POST", b"HEAD", b"PUT", b"get"])
def test_only_get_is_websocket(method: bytes) -> None:
    request = _h1(method=method)
    assert not request.websocket
    assert request.method == method.decode()


def test_from_h1_rejects_bad_target() -> None:
    with pytest.raises(BadRequest) as info:
        _h1(target=b"/../secret")
    assert info.value.status == 400


def test_connection_details_are_kept() -> None:
    request = Request.from_h1(
        b"GET", b"/", WS_HEADERS, b"1.1", scheme="https", client=("10.0.0.1", 5555), server=("10.0.0.2", 443)
    )
    assert request.scheme == "https"
    assert request.client == ("10.0.0.1", 5555)
    assert request.server == ("10.0.0.2", 443)


def test_informational_heads_are_formatted_like_h11_and_refuse_injection() -> None:
    import h11

    from wstrio._io.http.h1 import format_informational

    head = format_informational(101, [(b"upgrade", b"websocket"), (b"sec-websocket-accept", b" abc= ")])
    assert head == b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nsec-websocket-accept: abc=\r\n\r\n"
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x"), ("Upgrade", "websocket")]))
    client.send(h11.EndOfMessage())
    client.receive_data(head)
    event = client.next_event()
    assert isinstance(event, h11.InformationalResponse)
    assert event.status_code == 101
    for bad in [(b"x-evil", b"a\r\nset-cookie: b"), (b"bad name", b"v"), (b"", b"v"), (b"x", b"a\x00b")]:
        with pytest.raises(ValueError, match="invalid response header"):
            format_informational(101, [bad])


# -- Host and header values (issue 12, defect 5) -----------------------------------------

VALID_HOSTS = [
    b"",
    b"example.com",
    b"EXAMPLE.com.",
    b"example.com:8080",
    b"example.com:",
    b"127.0.0.1",
    b"127.0.0.1:80",
    b"[::1]",
    b"[::1]:8080",
    b"[2001:db8::7]",
    b"[::ffff:192.0.2.1]:443",
    b"[v1.fe80::a+en1]",
    b"%41b.example",
    b"a-b_c~d.e!$&'()*+,;=",
]
INVALID_HOSTS = [
    b"a b/c@d",
    b"user@example.com",
    b"user:pw@example.com",
    b"example.com/path",
    b"example.com?q",
    b"example.com#f",
    b"exa\x01mple.com",
    b"example.com\x7f",
    b"ex\tample.com",
    b"example.com:80x",
    b"example.com:-1",
    b"example.com:80:81",
    b"::1",
    b"[::1",
    b"[::1]x",
    b"[::1]:8x",
    b"[not-ipv6]",
    b"[1.2.3.4]",
    b"[v.x]",
    b"[vz.x]",
    b"[v1.]",
    b"%zz.example",
    b"%4",
    b'"example.com"',
    b"<example.com>",
    b"ex\\ample",
    b"\xe9xample.com",
]


@pytest.mark.parametrize("host", VALID_HOSTS)
def test_valid_hosts_pass(host: bytes) -> None:
    check_host(host)
    assert _h1([(b"Host", host)], target=b"/").header(b"host") == host


@pytest.mark.parametrize("host", INVALID_HOSTS)
def test_invalid_hosts_are_400(host: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        check_host(host)
    assert info.value.status == 400
    assert "invalid Host" in str(info.value)
    with pytest.raises(BadRequest):
        _h1([(b"Host", host)], target=b"/")


def test_http11_needs_exactly_one_host() -> None:
    with pytest.raises(BadRequest, match="without a Host"):
        _h1([], target=b"/")
    with pytest.raises(BadRequest, match="more than one Host"):
        _h1([(b"Host", b"a"), (b"host", b"a")], target=b"/")


def test_http10_may_leave_host_out_but_not_repeat_it() -> None:
    assert _h1([], target=b"/", version=b"1.0").host == ""
    with pytest.raises(BadRequest, match="more than one Host"):
        _h1([(b"Host", b"a"), (b"Host", b"b")], target=b"/", version=b"1.0")


@pytest.mark.parametrize("byte", [*range(0x09), *range(0x0A, 0x20), 0x7F])
def test_control_bytes_in_values_are_400(byte: int) -> None:
    value = b"a" + bytes([byte]) + b"b"
    with pytest.raises(BadRequest, match="control byte"):
        check_field_value(b"x-a", value)
    with pytest.raises(BadRequest, match="control byte"):
        _h1([(b"Host", b"x"), (b"X-A", value)], target=b"/")
    with pytest.raises(BadRequest, match=r"control byte|NUL, CR or LF"):
        Request.from_h2([(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b"x-a", value)])


def test_tab_and_obs_text_in_values_pass() -> None:
    check_field_value(b"x-a", b"a\tb \x80\xff")


@pytest.mark.parametrize("host", [b"a b/c@d", b"user@example.com", b"[::1"])
def test_h2_authority_and_host_are_checked(host: bytes) -> None:
    base = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/")]
    with pytest.raises(BadRequest, match="invalid Host"):
        Request.from_h2([*base, (b":authority", host)])
    with pytest.raises(BadRequest, match="invalid Host"):
        Request.from_h2([*base, (b"host", host)])
    with pytest.raises(BadRequest, match="more than one host"):
        Request.from_h2([*base, (b"host", b"a"), (b"host", b"b")])
    assert Request.from_h2([*base, (b":authority", b"example.com:8443")]).host == "example.com:8443"
