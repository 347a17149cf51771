"""Unit tests for static-file decisions (wstrio._sansio.http.static)."""

from __future__ import annotations

import time

import pytest

from wstrio._sansio.http.static import (
    DEFAULT_STATIC_DENY,
    content_type,
    etag_for,
    http_date,
    is_denied,
    is_not_modified,
)

MTIME = 1_700_000_000.75  # Tue, 14 Nov 2023 22:13:20 GMT (plus a fraction)
MTIME_DATE = b"Tue, 14 Nov 2023 22:13:20 GMT"
ETAG = etag_for(1_700_000_000_750_000_000, 1234)


# -- content_type ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("index.html", "text/html; charset=utf-8"),
        ("INDEX.HTM", "text/html; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("mod.mjs", "text/javascript; charset=utf-8"),
        ("data.json", "application/json; charset=utf-8"),
        ("feed.xml", "application/xml; charset=utf-8"),
        ("logo.svg", "image/svg+xml; charset=utf-8"),
        ("notes.txt", "text/plain; charset=utf-8"),
        ("logo.png", "image/png"),
        ("photo.JPG", "image/jpeg"),
        ("app.wasm", "application/wasm"),
        ("font.woff2", "font/woff2"),
        ("archive.tar.gz", "application/gzip"),
        ("Makefile", "application/octet-stream"),
        ("file.no-such-type-here", "application/octet-stream"),
        ("dir.d/noext", "application/octet-stream"),
    ],
)
def test_builtin_types(name: str, expected: str) -> None:
    assert content_type(name) == expected


def test_mimetype_assign_overrides_builtin() -> None:
    assert content_type("page.html", [(".html", "application/xhtml+xml")]) == "application/xhtml+xml"


def test_mimetype_assign_adds_types_and_charset_for_text() -> None:
    assert content_type("a.foo", [(".foo", "text/x-foo")]) == "text/x-foo; charset=utf-8"
    assert content_type("a.bar", [(".bar", "application/x-bar")]) == "application/x-bar"


def test_mimetype_assign_charset_is_kept() -> None:
    assert content_type("a.txt", [(".txt", "text/plain; charset=iso-8859-1")]) == "text/plain; charset=iso-8859-1"


def test_mimetype_assign_longest_suffix_wins() -> None:
    extra = [(".gz", "application/x-gzip"), (".tar.gz", "application/x-gtar")]
    assert content_type("a.tar.gz", extra) == "application/x-gtar"
    assert content_type("a.gz", extra) == "application/x-gzip"
    assert content_type("a.tar.gz", list(reversed(extra))) == "application/x-gtar"


def test_mimetype_assign_is_case_insensitive() -> None:
    assert content_type("A.FOO", [(".foo", "application/x-foo")]) == "application/x-foo"


def test_mimetype_assign_unrelated_entry_falls_back_to_builtin() -> None:
    assert content_type("a.png", [(".foo", "text/x-foo")]) == "image/png"


# -- etag_for / http_date -----------------------------------------------------------------


def test_etag_is_a_quoted_strong_validator() -> None:
    tag = etag_for(123, 456)
    assert tag.startswith('"')
    assert tag.endswith('"')
    assert not tag.startswith("W/")


def test_etag_changes_with_mtime_and_size() -> None:
    assert len({etag_for(1, 1), etag_for(2, 1), etag_for(1, 2)}) == 3
    assert etag_for(5, 7) == etag_for(5, 7)


def test_http_date() -> None:
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert http_date(MTIME) == MTIME_DATE.decode()


# -- is_not_modified ------------------------------------------------------------------------


def _nm(*, inm: bytes | None = None, ims: bytes | None = None) -> bool:
    return is_not_modified(etag=ETAG, mtime=MTIME, if_none_match=inm, if_modified_since=ims)


def test_no_conditions_means_modified() -> None:
    assert not _nm()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (ETAG.encode(), True),
        (b"W/" + ETAG.encode(), True),
        (b'"other", ' + ETAG.encode(), True),
        (b'"other",W/' + ETAG.encode() + b' , "x"', True),
        (b"*", True),
        (b'"other"', False),
        (ETAG.strip('"').encode(), False),
        (b"", False),
    ],
)
def test_if_none_match(header: bytes, expected: bool) -> None:
    assert _nm(inm=header) is expected


def test_if_none_match_wins_over_if_modified_since() -> None:
    assert not _nm(inm=b'"other"', ims=MTIME_DATE)
    assert _nm(inm=ETAG.encode(), ims=b"Thu, 01 Jan 1970 00:00:00 GMT")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (MTIME_DATE, True),  # equal (to the second): not modified
        (b"Wed, 15 Nov 2023 00:00:00 GMT", True),  # newer than the file
        (b"Tue, 14 Nov 2023 22:13:19 GMT", False),  # older than the file
        (b"Thu, 01 Jan 1970 00:00:00 GMT", False),
        (b"Tuesday, 14-Nov-23 22:13:20 GMT", True),  # RFC 850 form
        (b"Tue Nov 14 22:13:20 2023", True),  # asctime form
        (b"garbage", False),
        (b"", False),
        (b"Tue, 99 Nov 2023 22:13:20 GMT", False),
    ],
)
def test_if_modified_since(header: bytes, expected: bool) -> None:
    assert _nm(ims=header) is expected


def test_if_modified_since_without_zone_is_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The asctime form carries no zone; HTTP dates are UTC, not the server's local time."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert _nm(ims=b"Tue Nov 14 22:13:20 2023")
        assert not _nm(ims=b"Tue Nov 14 22:13:19 2023")
    finally:
        monkeypatch.undo()
        time.tzset()


# -- is_denied (static-deny) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/.git/config", True),
        ("/.env", True),
        ("/a/b/.htaccess", True),
        ("/.git/", True),
        ("/.well-known/security.txt", False),
        ("/.well-known/acme-challenge/token", False),
        ("/.well-known/", False),
        ("/.well-known/.secret", True),
        ("/a/.well-known/x", True),  # RFC 8615: only at the top of the path
        ("/index.html", False),
        ("/", False),
        ("/a.b/c", False),
        ("/dir./x", False),
    ],
)
def test_is_denied_default(path: str, expected: bool) -> None:
    assert is_denied(path, DEFAULT_STATIC_DENY) is expected


def test_is_denied_patterns_are_globs_per_segment() -> None:
    patterns = ("*.bak", "*~", "secret")
    assert is_denied("/notes.bak", patterns)
    assert is_denied("/a/page~", patterns)
    assert is_denied("/secret/x.txt", patterns)
    assert not is_denied("/secrets/x.txt", patterns)
    assert not is_denied("/.env", patterns)


def test_is_denied_is_case_sensitive() -> None:
    assert not is_denied("/NOTES.BAK", ("*.bak",))


def test_is_denied_no_patterns_denies_nothing() -> None:
    assert not is_denied("/.git/config", ())


def test_well_known_is_denied_only_when_named() -> None:
    assert not is_denied("/.well-known/x", (".*", "*-known"))
    assert is_denied("/.well-known/x", (".*", ".well-known"))
