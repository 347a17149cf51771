"""Absolute-form targets and ``OPTIONS *`` (issue 12, defect 7), sans I/O.

RFC 9112 section 3.2.2: a server MUST accept absolute-form; its authority
then replaces ``Host``.  RFC 9110 section 9.3.7: ``OPTIONS *`` asks about
the server.
"""

from __future__ import annotations

import pytest

from wstrio._errors import BadRequest
from wstrio._sansio.http.request import Request, split_absolute_form


def h1(target: bytes, *headers: tuple[bytes, bytes], method: bytes = b"GET", version: bytes = b"1.1") -> Request:
    return Request.from_h1(method, target, headers, version)


@pytest.mark.parametrize(
    ("target", "authority", "origin"),
    [
        (b"http://example.com/a/b?q=1", b"example.com", b"/a/b?q=1"),
        (b"https://example.com:8443/", b"example.com:8443", b"/"),
        (b"HTTP://Example.com", b"Example.com", b"/"),
        (b"http://example.com?x", b"example.com", b"/?x"),
        (b"http://[::1]:8080/ws/", b"[::1]:8080", b"/ws/"),
        (b"http://h/%2e%2e/x", b"h", b"/%2e%2e/x"),
    ],
)
def test_absolute_form_splits_into_authority_and_origin_form(target: bytes, authority: bytes, origin: bytes) -> None:
    assert split_absolute_form(target) == (authority, origin)


@pytest.mark.parametrize("target", [b"/a", b"*", b"", b"a/b", b"/http://x/"])
def test_other_forms_are_not_absolute(target: bytes) -> None:
    assert split_absolute_form(target) is None


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        (b"ftp://example.com/a", "only http and https"),
        (b"javascript://x/", "only http and https"),
        (b"http:///path", "without a host"),
        (b"http://user:pw@example.com/", "userinfo"),
    ],
)
def test_unusable_absolute_forms_are_400(target: bytes, fragment: str) -> None:
    with pytest.raises(BadRequest, match=fragment) as info:
        split_absolute_form(target)
    assert info.value.status == 400


def test_the_authority_replaces_host_and_the_target_becomes_origin_form() -> None:
    request = h1(b"http://example.com:8080/a/../b?x=1", (b"Host", b"other.example"), (b"Accept", b"*/*"))
    assert request.host == "example.com:8080"
    assert request.header_values(b"host") == [b"example.com:8080"]
    assert request.target == b"/a/../b?x=1"
    assert request.path == "/b"
    assert request.query == "x=1"
    assert request.header(b"accept") == b"*/*"


def test_absolute_form_needs_no_host_header() -> None:
    assert h1(b"http://example.com/").host == "example.com"


@pytest.mark.parametrize("authority", [b"a b", b"exa\x01mple", b"host:port"])
def test_the_authority_is_checked_as_a_host_is(authority: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        h1(b"http://" + authority + b"/")
    assert info.value.status == 400


def test_two_host_headers_stay_400_with_absolute_form() -> None:
    with pytest.raises(BadRequest, match="more than one Host"):
        h1(b"http://example.com/", (b"Host", b"a"), (b"Host", b"b"))


def test_absolute_form_websocket_handshake_is_a_websocket() -> None:
    request = h1(b"http://example.com/ws/", (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"))
    assert request.websocket
    assert request.path == "/ws/"


def test_options_asterisk_has_the_path_asterisk() -> None:
    request = h1(b"*", (b"Host", b"x"), method=b"OPTIONS")
    assert request.path == "*"
    assert request.target == b"*"
    assert request.query == ""


@pytest.mark.parametrize("method", [b"GET", b"POST", b"HEAD"])
def test_asterisk_with_another_method_is_400(method: bytes) -> None:
    with pytest.raises(BadRequest, match="asterisk") as info:
        h1(b"*", (b"Host", b"x"), method=method)
    assert info.value.status == 400


def test_h2_options_asterisk() -> None:
    request = Request.from_h2(
        [(b":method", b"OPTIONS"), (b":scheme", b"https"), (b":authority", b"x"), (b":path", b"*")]
    )
    assert request.path == "*"
