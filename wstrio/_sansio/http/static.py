"""Static-file decisions: content types, validators, conditional requests, denied paths.

The file system is read by the I/O layer; this module only decides.

Never imports trio.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Iterable, Sequence
from datetime import UTC
from email.utils import formatdate, parsedate_to_datetime
from fnmatch import fnmatchcase

__all__ = [
    "DEFAULT_STATIC_DENY",
    "WELL_KNOWN",
    "content_type",
    "etag_for",
    "http_date",
    "inside_root",
    "is_denied",
    "is_not_modified",
    "static_deny_problem",
]

DEFAULT_STATIC_DENY: tuple[str, ...] = (".*",)
"""``static-deny``'s default: any path segment starting with a dot (``.git``, ``.env``, ``.htpasswd``)."""

WELL_KNOWN = ".well-known"
"""RFC 8615's first segment (ACME http-01, ``security.txt``): only a pattern naming it exactly denies it."""

# Common types, so behaviour does not depend on the machine's /etc/mime.types
# (lighttpd with no mimetype.assign serves .html as a download).
_TYPES = {
    ".html": "text/html",
    ".htm": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".json": "application/json",
    ".map": "application/json",
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".csv": "text/csv",
    ".xml": "application/xml",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".wasm": "application/wasm",
    ".pdf": "application/pdf",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".wav": "audio/wav",
    ".zip": "application/zip",
    ".gz": "application/gzip",
    ".tar": "application/x-tar",
}


def content_type(name: str, extra: Iterable[tuple[str, str]] = ()) -> str:
    """The Content-Type for a file name; text types get ``charset=utf-8``.

    ``extra`` (``mimetype-assign``) wins over the built-in table, which wins
    over the system's ``mimetypes`` database.  The longest matching suffix
    wins, so ``.tar.gz`` can be mapped separately from ``.gz``.
    """
    lower = name.lower()
    best = ""
    found = None
    for suffix, value in extra:
        if lower.endswith(suffix.lower()) and len(suffix) > len(best):
            best, found = suffix, value
    if found is None:
        dot = lower.rfind(".")
        ext = lower[dot:] if dot >= 0 else ""
        found = _TYPES.get(ext) or mimetypes.guess_type(lower, strict=False)[0] or "application/octet-stream"
    if (found.startswith("text/") or found in ("application/json", "application/xml", "image/svg+xml")) and (
        "charset" not in found
    ):
        found += "; charset=utf-8"
    return found


def http_date(timestamp: float) -> str:
    """An IMF-fixdate (RFC 9110 section 5.6.7)."""
    return formatdate(timestamp, usegmt=True)


def etag_for(mtime_ns: int, size: int) -> str:
    """A strong validator from modification time and size."""
    return f'"{mtime_ns:x}-{size:x}"'


def is_not_modified(
    *,
    etag: str,
    mtime: float,
    if_none_match: bytes | None,
    if_modified_since: bytes | None,
) -> bool:
    """RFC 9110 section 13.2.2: should a GET/HEAD be answered 304?

    ``If-None-Match`` wins over ``If-Modified-Since`` when both are present.
    """
    if if_none_match is not None:
        tags = [t.strip() for t in if_none_match.decode("latin-1").split(",")]
        return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)
    if if_modified_since is not None:
        try:
            since_dt = parsedate_to_datetime(if_modified_since.decode("latin-1"))
            if since_dt.tzinfo is None:
                # The asctime form (and "-0000") has no zone; HTTP dates are always UTC.
                since_dt = since_dt.replace(tzinfo=UTC)
            since = since_dt.timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
        return int(mtime) <= since
    return False


def static_deny_problem(patterns: Sequence[str]) -> str | None:
    """Why ``patterns`` is not a valid ``static-deny`` value, or ``None``."""
    if isinstance(patterns, str) or not isinstance(patterns, (tuple, list)):
        return f"must be an array of strings, not {patterns!r}"
    for i, pattern in enumerate(patterns):
        if not isinstance(pattern, str):
            return f"item {i} must be a string, not {pattern!r}"
        if not pattern:
            return f"item {i} must not be empty"
        if "/" in pattern or "\0" in pattern:
            return f"item {i} must match one path segment (no '/'), not {pattern!r}"
    return None


def is_denied(path: str, patterns: Iterable[str]) -> bool:
    """Does a segment of ``path`` (decoded, normalised, ``/``-separated) match a ``static-deny`` pattern?

    Patterns are shell globs (:func:`fnmatch.fnmatchcase`: ``*``, ``?``,
    ``[...]``; case-sensitive), each matched against every segment.  The
    first segment ``.well-known`` is matched only by a pattern that is
    exactly ``.well-known``, so the default ``.*`` leaves it served; the
    segments below it are matched as usual.
    """
    patterns = tuple(patterns)
    if not patterns:
        return False
    segments = [segment for segment in path.split("/") if segment]
    for i, segment in enumerate(segments):
        if i == 0 and segment == WELL_KNOWN:
            if WELL_KNOWN in patterns:
                return True
            continue
        if any(fnmatchcase(segment, pattern) for pattern in patterns):
            return True
    return False


def inside_root(path: str, root: str) -> bool:
    """Whether the real path ``path`` is ``root`` or lies below it (both already resolved)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
