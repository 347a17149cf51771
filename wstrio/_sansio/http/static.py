"""Static-file decisions: content types, validators, conditional requests.

The file system is read by the I/O layer; this module only decides.

Never imports trio.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable
from datetime import UTC
from email.utils import formatdate, parsedate_to_datetime

__all__ = ["content_type", "etag_for", "http_date", "is_not_modified"]

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
