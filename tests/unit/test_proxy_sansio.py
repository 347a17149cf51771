"""Reverse-proxy policy (wstrio._sansio.http.proxy, .http.headers, .upgrade): no sockets, no event loop."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from wsproto.utilities import generate_accept_token

from wstrio import Backend, BadRequest, ConfigError, Route, config_from_mapping
from wstrio._sansio.http.headers import connection_options, filter_response_headers, remove_hop_by_hop
from wstrio._sansio.http.proxy import backend_request, forwarded_element, host_header
from wstrio._sansio.http.request import Request
from wstrio._sansio.upgrade import Forward, ProxyPlan, Reject, Switch, judge_response, new_websocket_key, plan_request

BACKEND = Backend(host="127.0.0.1", port=8081)


def h1(
    method: bytes = b"GET",
    target: bytes = b"/app?q=1",
    headers: list[tuple[bytes, bytes]] | None = None,
    version: bytes = b"1.1",
    **kwargs: Any,
) -> Request:
    if headers is None:
        headers = [(b"Host", b"example.com")]
    kwargs.setdefault("client", ("192.0.2.7", 50000))
    return Request.from_h1(method, target, headers, version, **kwargs)


def h2_websocket(headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    return Request.from_h2(
        [
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            (b":scheme", b"https"),
            (b":path", b"/chat"),
            (b":authority", b"example.com"),
            (b"sec-websocket-version", b"13"),
            *(headers or []),
        ],
        scheme="https",
        client=("2001:db8::1", 40000),
    )


def h2_request(method: bytes = b"POST", headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    return Request.from_h2(
        [
            (b":method", method),
            (b":scheme", b"https"),
            (b":path", b"/upload"),
            (b":authority", b"example.com"),
            *(headers or []),
        ],
        scheme="https",
        client=("192.0.2.9", 1),
    )


def proxy_route(**kwargs: Any) -> Route:
    return Route(handler="proxy", path="/", backends=(BACKEND,), **kwargs)


WS_HEADERS = [
    (b"Host", b"example.com"),
    (b"Upgrade", b"websocket"),
    (b"Connection", b"keep-alive, Upgrade"),
    (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"Sec-WebSocket-Version", b"13"),
    (b"Sec-WebSocket-Protocol", b"chat"),
    (b"Origin", b"http://example.com"),
]


def names(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [name for name, _ in headers]


def values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [v for n, v in headers if n == name]


# -- hop-by-hop ---------------------------------------------------------------


def test_connection_options_collects_every_field() -> None:
    headers = [(b"connection", b"Keep-Alive, X-Foo"), (b"connection", b" close ,"), (b"x-foo", b"1")]
    assert connection_options(headers) == {b"keep-alive", b"x-foo", b"close"}


def test_remove_hop_by_hop_removes_standard_and_named_fields() -> None:
    headers = [
        (b"connection", b"x-private"),
        (b"x-private", b"secret"),
        (b"keep-alive", b"timeout=5"),
        (b"proxy-connection", b"keep-alive"),
        (b"te", b"trailers"),
        (b"transfer-encoding", b"chunked"),
        (b"trailer", b"x-checksum"),
        (b"upgrade", b"websocket"),
        (b"x-end-to-end", b"kept"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]
    assert remove_hop_by_hop(headers) == [(b"x-end-to-end", b"kept"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]


def test_remove_hop_by_hop_keep() -> None:
    headers = [(b"upgrade", b"websocket"), (b"connection", b"upgrade")]
    assert remove_hop_by_hop(headers, keep=frozenset({b"upgrade"})) == [(b"upgrade", b"websocket")]


# -- plan_request -------------------------------------------------------------


def test_plan_plain_get() -> None:
    assert plan_request(h1(), proxy_route()) == ProxyPlan("http", "none")


def test_plan_content_length_body() -> None:
    request = h1(b"POST", headers=[(b"Host", b"h"), (b"Content-Length", b"12")])
    assert plan_request(request, proxy_route()) == ProxyPlan("http", "length", 12)


def test_plan_content_length_zero_is_no_body() -> None:
    request = h1(b"POST", headers=[(b"Host", b"h"), (b"Content-Length", b"0")])
    assert plan_request(request, proxy_route()).body == "none"


def test_plan_chunked_beats_content_length() -> None:
    request = h1(b"POST", headers=[(b"Host", b"h"), (b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked")])
    plan = plan_request(request, proxy_route())
    assert (plan.body, plan.content_length) == ("chunked", None)
    head = backend_request(request, plan, host=b"h")
    assert values(head.headers, b"transfer-encoding") == [b"chunked"]
    assert values(head.headers, b"content-length") == []


def test_plan_conflicting_content_length_is_400() -> None:
    request = h2_request(headers=[(b"content-length", b"1"), (b"content-length", b"2")])
    with pytest.raises(BadRequest) as info:
        plan_request(request, proxy_route())
    assert info.value.status == 400


def test_plan_h2_body_without_length_is_unknown() -> None:
    assert plan_request(h2_request(), proxy_route()).body == "unknown"
    request = h2_request(headers=[(b"content-length", b"3")])
    assert plan_request(request, proxy_route()) == ProxyPlan("http", "length", 3)


def test_plan_websocket_upgrade_when_enabled() -> None:
    plan = plan_request(h1(headers=WS_HEADERS), proxy_route(upgrade=True))
    assert plan == ProxyPlan("upgrade", "none", upgrade=b"websocket")


def test_plan_any_upgrade_token_passes() -> None:
    headers = [(b"Host", b"h"), (b"Upgrade", b"foo/2, bar"), (b"Connection", b"upgrade")]
    plan = plan_request(h1(b"OPTIONS", headers=headers), proxy_route(upgrade=True))
    assert (plan.mode, plan.upgrade) == ("upgrade", b"foo/2, bar")


def test_plan_h2c_is_never_passed() -> None:
    headers = [(b"Host", b"h"), (b"Upgrade", b"h2c"), (b"Connection", b"Upgrade, HTTP2-Settings")]
    plan = plan_request(h1(headers=headers), proxy_route(upgrade=True))
    assert plan.mode == "http"
    assert "h2c" in plan.note
    headers = [(b"Host", b"h"), (b"Upgrade", b"H2C, websocket"), (b"Connection", b"upgrade")]
    assert plan_request(h1(headers=headers), proxy_route(upgrade=True)).upgrade == b"websocket"


@pytest.mark.parametrize(
    ("route", "method", "headers", "version", "note"),
    [
        (proxy_route(), b"GET", WS_HEADERS, b"1.1", "upgrade is off"),
        (proxy_route(upgrade=True), b"GET", WS_HEADERS, b"1.0", "HTTP/1.0"),
        (proxy_route(upgrade=True), b"POST", [*WS_HEADERS, (b"Content-Length", b"3")], b"1.1", "body"),
        (
            proxy_route(upgrade=True),
            b"GET",
            [(b"Host", b"h"), (b"Upgrade", b"websocket")],
            b"1.1",
            "Connection does not list",
        ),
    ],
)
def test_plan_upgrade_removed(
    route: Route, method: bytes, headers: list[tuple[bytes, bytes]], version: bytes, note: str
) -> None:
    request = h1(method, headers=headers, version=version)
    plan = plan_request(request, route)
    assert plan.mode == "http"
    assert note in plan.note
    head = backend_request(request, plan, host=b"h")
    assert b"upgrade" not in names(head.headers)
    assert values(head.headers, b"connection") == [b"close"]


def test_plan_h2_websocket_needs_upgrade() -> None:
    with pytest.raises(BadRequest) as info:
        plan_request(h2_websocket(), proxy_route())
    assert info.value.status == 405
    assert plan_request(h2_websocket(), proxy_route(upgrade=True)) == ProxyPlan(
        "websocket-h2", "none", upgrade=b"websocket"
    )


def test_plan_connect_is_405() -> None:
    request = Request(method="CONNECT", target=b"/", path="/", query="", headers=((b"host", b"h"),))
    with pytest.raises(BadRequest) as info:
        plan_request(request, proxy_route(upgrade=True))
    assert info.value.status == 405


# -- backend_request ----------------------------------------------------------


def test_backend_request_plain() -> None:
    request = h1(
        b"DELETE",
        b"/a%20b/../c?x=1",
        [
            (b"Host", b"example.com:8080"),
            (b"Accept", b"*/*"),
            (b"Connection", b"keep-alive, X-Hop"),
            (b"X-Hop", b"1"),
            (b"Keep-Alive", b"300"),
            (b"Proxy", b"http://evil"),
            (b"X-Forwarded-Host", b"spoofed"),
            (b"X-Forwarded-Proto", b"https"),
            (b"Cookie", b"a=1"),
        ],
    )
    head = backend_request(request, plan_request(request, proxy_route()), host=b"example.com:8080")
    assert head.method == b"DELETE"
    assert head.target == b"/a%20b/../c?x=1"  # the raw target, as received
    assert head.headers == [
        (b"host", b"example.com:8080"),
        (b"accept", b"*/*"),
        (b"cookie", b"a=1"),
        (b"x-forwarded-for", b"192.0.2.7"),
        (b"x-forwarded-host", b"example.com:8080"),
        (b"x-forwarded-proto", b"http"),
        (b"connection", b"close"),
    ]


def test_backend_request_appends_to_forwarded_for_chain() -> None:
    request = h1(headers=[(b"Host", b"h"), (b"X-Forwarded-For", b"203.0.113.1"), (b"X-Forwarded-For", b"10.0.0.1")])
    head = backend_request(request, plan_request(request, proxy_route()), host=b"h")
    assert values(head.headers, b"x-forwarded-for") == [b"203.0.113.1, 10.0.0.1, 192.0.2.7"]


def test_backend_request_unix_client_has_no_forwarded_for() -> None:
    request = h1(client=None)
    head = backend_request(request, plan_request(request, proxy_route()), host=b"h", forwarded=True)
    assert b"x-forwarded-for" not in names(head.headers)
    assert values(head.headers, b"forwarded") == [b"for=unknown;host=example.com;proto=http"]


def test_backend_request_forwarded_only_when_enabled() -> None:
    request = h1(headers=[(b"Host", b"example.com:8080"), (b"Forwarded", b"for=203.0.113.1")])
    plan = plan_request(request, proxy_route())
    off = backend_request(request, plan, host=b"h")
    assert values(off.headers, b"forwarded") == [b"for=203.0.113.1"]  # passed on, untouched
    on = backend_request(request, plan, host=b"h", forwarded=True)
    assert values(on.headers, b"forwarded") == [b'for=203.0.113.1, for=192.0.2.7;host="example.com:8080";proto=http']


def test_forwarded_element_ipv6_and_https() -> None:
    request = Request.from_h1(b"GET", b"/", [(b"Host", b"ex.org")], b"1.1", scheme="https", client=("2001:db8::5", 1))
    assert forwarded_element(request) == b'for="[2001:db8::5]";host=ex.org;proto=https'


def test_backend_request_body_framing() -> None:
    request = h1(b"PUT", headers=[(b"Host", b"h"), (b"Content-Length", b"7"), (b"Expect", b"100-continue")])
    head = backend_request(request, plan_request(request, proxy_route()), host=b"h")
    assert values(head.headers, b"content-length") == [b"7"]
    assert values(head.headers, b"expect") == [b"100-continue"]  # end-to-end: forwarded
    with pytest.raises(ValueError, match="unknown"):
        backend_request(h2_request(), ProxyPlan("http", "unknown"), host=b"h")


def test_backend_request_websocket_pass_through() -> None:
    request = h1(headers=WS_HEADERS)
    head = backend_request(request, plan_request(request, proxy_route(upgrade=True)), host=b"example.com")
    assert head.method == b"GET"
    assert values(head.headers, b"upgrade") == [b"websocket"]
    assert values(head.headers, b"connection") == [b"close, upgrade"]
    for name, value in WS_HEADERS[3:]:
        assert values(head.headers, name.lower()) == [value]


def test_backend_request_h2_websocket() -> None:
    request = h2_websocket(
        [
            (b"sec-websocket-protocol", b"chat, superchat"),
            (b"sec-websocket-extensions", b"permessage-deflate"),
            (b"cookie", b"a=1"),
            (b"cookie", b"b=2"),
        ]
    )
    plan = plan_request(request, proxy_route(upgrade=True))
    key = new_websocket_key()
    head = backend_request(request, plan, host=b"example.com", websocket_key=key)
    assert head.method == b"GET"
    assert head.target == b"/chat"
    assert values(head.headers, b"upgrade") == [b"websocket"]
    assert values(head.headers, b"connection") == [b"close, upgrade"]
    assert values(head.headers, b"sec-websocket-version") == [b"13"]
    assert values(head.headers, b"sec-websocket-key") == [key]
    assert values(head.headers, b"sec-websocket-protocol") == [b"chat, superchat"]
    assert values(head.headers, b"sec-websocket-extensions") == [b"permessage-deflate"]
    assert values(head.headers, b"cookie") == [b"a=1; b=2"]
    assert values(head.headers, b"x-forwarded-for") == [b"2001:db8::1"]
    assert values(head.headers, b"x-forwarded-proto") == [b"https"]
    with pytest.raises(ValueError, match="websocket_key"):
        backend_request(request, plan, host=b"example.com")


def test_new_websocket_key_is_random_base64_of_16_bytes() -> None:
    keys = {new_websocket_key() for _ in range(20)}
    assert len(keys) == 20
    assert all(len(base64.b64decode(k, validate=True)) == 16 for k in keys)


# -- host_header --------------------------------------------------------------


def test_host_header_kept_by_default() -> None:
    assert host_header(h1(), BACKEND, replace=False) == b"example.com"


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        (Backend(host="127.0.0.1", port=8081), b"127.0.0.1:8081"),
        (Backend(host="::1", port=80), b"[::1]"),
        (Backend(host="10.0.0.1", port=8081, label="app.internal"), b"app.internal"),
        (Backend(socket=Path("/run/app.sock")), b"localhost"),
    ],
)
def test_host_header_replaced(backend: Backend, expected: bytes) -> None:
    assert host_header(h1(), backend, replace=True) == expected


def test_host_header_http10_without_host_uses_backend() -> None:
    request = h1(headers=[], version=b"1.0")
    assert host_header(request, BACKEND, replace=False) == b"127.0.0.1:8081"


# -- responses ----------------------------------------------------------------


def test_filter_response_headers() -> None:
    headers = [
        (b"content-type", b"text/plain"),
        (b"connection", b"close, x-private"),
        (b"x-private", b"1"),
        (b"keep-alive", b"timeout=5"),
        (b"transfer-encoding", b"chunked"),
        (b"content-length", b"10"),
        (b"date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
        (b"server", b"backend/1.0"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]
    assert filter_response_headers(headers) == [
        (b"content-type", b"text/plain"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]
    assert filter_response_headers([(b"content-length", b"10")]) == [(b"content-length", b"10")]


def test_judge_ordinary_response() -> None:
    plan = ProxyPlan("http", "none")
    verdict = judge_response(plan, 404, [(b"content-length", b"3"), (b"connection", b"close")])
    assert verdict == Forward(404, [(b"content-length", b"3")])


def test_judge_101_pass_through() -> None:
    plan = ProxyPlan("upgrade", "none", upgrade=b"websocket")
    headers = [
        (b"upgrade", b"WebSocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        (b"content-length", b"0"),
        (b"x-custom", b"1"),
    ]
    assert judge_response(plan, 101, headers) == Switch(
        101,
        [
            (b"upgrade", b"WebSocket"),
            (b"sec-websocket-accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            (b"x-custom", b"1"),
            (b"connection", b"upgrade"),
        ],
    )


def test_judge_101_without_upgrade_is_502() -> None:
    plan = ProxyPlan("upgrade", "none", upgrade=b"websocket")
    verdict = judge_response(plan, 101, [(b"connection", b"upgrade")])
    assert isinstance(verdict, Reject)
    assert verdict.status == 502


def test_judge_101_without_asking_is_502() -> None:
    verdict = judge_response(ProxyPlan("http", "none"), 101, [(b"upgrade", b"websocket")])
    assert isinstance(verdict, Reject)
    assert verdict.status == 502


def test_judge_non_101_to_upgrade_passes_without_upgrade_header() -> None:
    plan = ProxyPlan("upgrade", "none", upgrade=b"websocket")
    verdict = judge_response(plan, 200, [(b"upgrade", b"websocket"), (b"content-length", b"2")])
    assert verdict == Forward(200, [(b"content-length", b"2")])


def test_judge_h2_websocket_switch() -> None:
    plan = ProxyPlan("websocket-h2", "none", upgrade=b"websocket")
    key = new_websocket_key()
    headers = [
        (b"upgrade", b"websocket"),
        (b"connection", b"upgrade"),
        (b"sec-websocket-accept", generate_accept_token(key)),
        (b"sec-websocket-protocol", b"chat"),
        (b"server", b"backend"),
    ]
    assert judge_response(plan, 101, headers, websocket_key=key) == Switch(200, [(b"sec-websocket-protocol", b"chat")])


def test_judge_h2_websocket_wrong_accept_is_502() -> None:
    plan = ProxyPlan("websocket-h2", "none", upgrade=b"websocket")
    headers = [(b"upgrade", b"websocket"), (b"sec-websocket-accept", b"wrong")]
    verdict = judge_response(plan, 101, headers, websocket_key=new_websocket_key())
    assert isinstance(verdict, Reject)
    assert verdict.status == 502
    verdict = judge_response(plan, 101, [(b"upgrade", b"tls/1.0")], websocket_key=new_websocket_key())
    assert isinstance(verdict, Reject)
    assert verdict.status == 502


def test_judge_h2_websocket_2xx_is_405_and_errors_pass() -> None:
    plan = ProxyPlan("websocket-h2", "none", upgrade=b"websocket")
    verdict = judge_response(plan, 200, [(b"content-length", b"0")])
    assert isinstance(verdict, Reject)
    assert verdict.status == 405
    assert judge_response(plan, 403, [(b"content-length", b"0")]) == Forward(403, [(b"content-length", b"0")])


# -- configuration ------------------------------------------------------------


def test_proxy_route_keys_and_defaults() -> None:
    config = config_from_mapping(
        {
            "route": [
                {"path": "/a/", "handler": "proxy", "backend": [{"host": "127.0.0.1", "port": 1}]},
                {
                    "path": "/",
                    "handler": "proxy",
                    "upgrade": True,
                    "forwarded": True,
                    "replace-http-host": "enable",  # lighttpd's spelling works too
                    "backend": [{"host": "127.0.0.1", "port": 1}],
                },
            ]
        }
    )
    plain, full = config.routes
    assert (plain.upgrade, plain.forwarded, plain.replace_http_host) == (False, False, False)
    assert (full.upgrade, full.forwarded, full.replace_http_host) == (True, True, True)


@pytest.mark.parametrize("key", ["forwarded", "replace-http-host"])
def test_proxy_only_keys_elsewhere_are_errors(key: str) -> None:
    route = {"path": "/ws/", "handler": "wstunnel", key: True, "backend": [{"host": "127.0.0.1", "port": 1}]}
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"route": [route]})
    assert info.value.problems == ((f"route[0].{key}", "only applies to proxy routes, not 'wstunnel'"),)


def test_forwarded_without_host_and_with_an_odd_client_name() -> None:
    # An HTTP/1.0 request without Host, from an address that is not an IP
    # (an embedding's custom listener): quoted and escaped per RFC 7230.
    request = Request.from_h1(b"GET", b"/", [], b"1.0", client=('odd "name"', 1))
    head = backend_request(request, plan_request(request, proxy_route()), host=b"backend", forwarded=True)
    assert values(head.headers, b"forwarded") == [b'for="odd \\"name\\"";proto=http']
    assert b"x-forwarded-host" not in names(head.headers)
