"""Unit tests for route matching (wstrio._sansio.routing)."""

from __future__ import annotations

import re
from typing import get_args

import pytest

from wstrio._config import Backend, HandlerName, Route
from wstrio._io.handlers.dispatch import HANDLERS
from wstrio._sansio.http.request import Request
from wstrio._sansio.routing import Router, route_matches_path

BACKEND = (Backend(host="127.0.0.1", port=1),)
WS_HEADERS = [(b"Host", b"h"), (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")]


def _request(target: bytes, *, websocket: bool = True) -> Request:
    request = Request.from_h1(b"GET", target, WS_HEADERS if websocket else [(b"Host", b"h")], b"1.1")
    assert request.websocket is websocket
    return request


def _route(
    handler: HandlerName = "wstunnel",
    *,
    path: str | None = None,
    regex: str | None = None,
    extensions: tuple[str, ...] = (),
) -> Route:
    return Route(
        handler=handler,
        path=path,
        regex=re.compile(regex) if regex is not None else None,
        extensions=extensions,
        backends=BACKEND,
    )


@pytest.mark.parametrize(
    ("prefix", "path", "expected"),
    [
        ("/ws", "/ws", True),
        ("/ws", "/ws/", True),
        ("/ws", "/wsx", True),
        ("/ws", "/ws/chat", True),
        ("/ws/", "/ws", False),
        ("/ws/", "/ws/chat", True),
        ("/ws", "/WS", False),
        ("/ws", "/a/ws", False),
        ("/", "/anything", True),
    ],
)
def test_path_is_a_plain_prefix(prefix: str, path: str, expected: bool) -> None:
    assert route_matches_path(_route(path=prefix), path) is expected


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("^/websockify", "/websockify", True),
        ("^/websockify", "/websockify/x", True),
        ("^/websockify", "/a/websockify", False),
        ("websockify", "/a/websockify", True),
        (r"\.ws$", "/x.ws", True),
        (r"\.ws$", "/x.wsx", False),
    ],
)
def test_regex_is_searched(pattern: str, path: str, expected: bool) -> None:
    assert route_matches_path(_route(regex=pattern), path) is expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/chat.ws", True), ("/a/b.ws2", True), ("/chat.ws/x", False), ("/chat.wsx", False), ("/ws", False)],
)
def test_extensions_are_suffixes(path: str, expected: bool) -> None:
    assert route_matches_path(_route(extensions=(".ws", ".ws2")), path) is expected


def test_first_match_wins() -> None:
    first = _route(path="/ws/")
    second = _route(path="/ws/chat")
    router = Router([first, second])
    assert router.match(_request(b"/ws/chat")) == (0, first)


def test_later_route_when_earlier_does_not_match() -> None:
    first = _route(path="/a/")
    second = _route(regex="^/b")
    third = _route(extensions=(".ws",))
    router = Router([first, second, third])
    assert router.match(_request(b"/b/x")) == (1, second)
    assert router.match(_request(b"/c/x.ws")) == (2, third)
    assert router.match(_request(b"/c/x")) is None


def test_no_routes_means_no_match() -> None:
    assert Router([]).match(_request(b"/")) is None


def test_wstunnel_takes_only_websocket_requests() -> None:
    tunnel = _route(path="/ws/")
    router = Router([tunnel])
    assert router.match(_request(b"/ws/")) == (0, tunnel)
    assert router.match(_request(b"/ws/", websocket=False)) is None


def test_non_websocket_falls_through_to_later_routes() -> None:
    tunnel = _route(path="/ws/")
    proxy = _route("proxy", path="/")
    router = Router([tunnel, proxy])
    assert router.match(_request(b"/ws/", websocket=False)) == (1, proxy)
    assert router.match(_request(b"/ws/")) == (0, tunnel)


@pytest.mark.parametrize("handler", ["proxy", "scgi", "fastcgi", "cgi"])
def test_other_handlers_take_every_matching_request(handler: HandlerName) -> None:
    route = _route(handler, path="/app/")
    router = Router([route])
    assert router.match(_request(b"/app/x", websocket=False)) == (0, route)
    assert router.match(_request(b"/app/x")) == (0, route)


def test_matching_uses_the_normalised_path() -> None:
    route = _route(path="/ws/")
    router = Router([route])
    assert router.match(_request(b"/static/%2e%2e/ws/chat")) == (0, route)
    assert router.match(_request(b"/ws/../static/x")) is None


def test_every_handler_name_has_a_handler() -> None:
    # The dispatcher's table replaces a match statement that mypy checked
    # for exhaustiveness (assert_never): this test checks it instead.
    assert set(HANDLERS) == set(get_args(HandlerName))
