"""The request value every handler sees, whatever the HTTP version.

An HTTP/1.1 request (h11) and an HTTP/2 stream (h2) are both turned into one
:class:`Request`.  A WebSocket request is ``websocket=True`` either way: an
HTTP/1.1 ``GET`` with ``Upgrade: websocket`` and ``Connection: upgrade``, or an
HTTP/2 extended CONNECT with ``:protocol websocket`` (RFC 8441).

Never imports trio.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import final
from urllib.parse import unquote_to_bytes

import attrs

from .._errors import HandshakeRejected

__all__ = ["Request", "has_token", "normalize_target"]

Headers = tuple[tuple[bytes, bytes], ...]


def has_token(value: bytes | None, token: bytes) -> bool:
    """True if the comma-separated header ``value`` contains ``token`` (case-insensitive).

    As lighttpd's ``http_header_str_contains_token``: ``;`` also ends a token.
    """
    if not value:
        return False
    token = token.lower()
    for part in value.split(b","):
        if part.split(b";", 1)[0].strip().lower() == token:
            return True
    return False


def normalize_target(target: bytes) -> tuple[str, str]:
    """Split a request-target into a decoded, normalised path and the raw query.

    ``.`` and ``..`` segments are resolved (after percent-decoding, so
    ``%2e%2e`` is ``..``); a ``..`` that would climb above ``/`` is a 400, as
    are NUL bytes, invalid UTF-8 and targets that are not in origin form.

    Returns:
        ``(path, query)``; ``path`` always starts with ``/``.

    Raises:
        HandshakeRejected: 400 for a target that cannot be served.
    """
    raw_path, _, query = target.partition(b"?")
    raw_path = raw_path.partition(b"#")[0]
    if not raw_path.startswith(b"/"):
        if target == b"*":
            msg = "the asterisk target is only for OPTIONS"
        else:
            msg = f"request-target must start with '/', not {target[:80]!r}"
        raise HandshakeRejected(msg, 400)
    decoded = unquote_to_bytes(raw_path)
    if b"\0" in decoded:
        msg = "request path contains a NUL byte"
        raise HandshakeRejected(msg, 400)
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        msg = "request path is not valid UTF-8"
        raise HandshakeRejected(msg, 400) from None
    parts: list[str] = []
    segments = text.split("/")
    for seg in segments[1:-1]:
        if seg in ("", "."):
            continue
        if seg == "..":
            if not parts:
                msg = "request path climbs above the root"
                raise HandshakeRejected(msg, 400)
            parts.pop()
            continue
        parts.append(seg)
    last = segments[-1] if len(segments) > 1 else ""
    trailing = last in ("", ".", "..")
    if last == "..":
        if not parts:
            msg = "request path climbs above the root"
            raise HandshakeRejected(msg, 400)
        parts.pop()
    elif last not in ("", "."):
        parts.append(last)
    path = "/" + "/".join(parts)
    if trailing and parts:
        path += "/"
    try:
        query_text = query.decode("ascii")
    except UnicodeDecodeError:
        query_text = query.decode("latin-1")
    return path, query_text


@final
@attrs.frozen
class Request:
    """One request (or WebSocket handshake), independent of the HTTP version."""

    method: str
    """``GET``, ``POST``, ... (``GET`` for an HTTP/2 extended CONNECT WebSocket)."""
    target: bytes
    """The raw request-target as received (path and query, not decoded)."""
    path: str
    """The percent-decoded, normalised URL path, without the query."""
    query: str
    """The raw query string, without the ``?``."""
    headers: Headers
    """Header fields in order, names lower-cased.  HTTP/2 pseudo-headers are removed;
    ``:authority`` becomes ``host``."""
    http_version: str = "1.1"
    """``"1.0"``, ``"1.1"`` or ``"2"``."""
    scheme: str = "http"
    """``"http"`` or ``"https"``."""
    client: tuple[str, int] | None = None
    """Remote address and port (``None`` on a unix socket)."""
    server: tuple[str, int] | None = None
    """Local address and port (``None`` on a unix socket)."""
    websocket: bool = False
    """A WebSocket handshake: h1 ``Upgrade: websocket`` or h2 ``:protocol websocket``."""
    upgrade: bytes | None = None
    """The ``Upgrade`` header (h1) or ``:protocol`` (h2), if any."""

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or ``None``."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_values(self, name: bytes) -> list[bytes]:
        """Every value of header ``name`` (lower-case), in order."""
        return [value for key, value in self.headers if key == name]

    @property
    def host(self) -> str:
        """The ``Host`` header (or ``:authority``), or ``""``."""
        value = self.header(b"host")
        return value.decode("latin-1") if value is not None else ""

    @property
    def h2(self) -> bool:
        """True for a request on an HTTP/2 stream."""
        return self.http_version == "2"

    @classmethod
    def from_h1(
        cls,
        method: bytes,
        target: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        http_version: bytes,
        *,
        scheme: str = "http",
        client: tuple[str, int] | None = None,
        server: tuple[str, int] | None = None,
    ) -> Request:
        """Build a request from h11's parsed request line and headers.

        Raises:
            HandshakeRejected: 400 for an unusable target.
        """
        path, query = normalize_target(target)
        hdrs = tuple((k.lower(), v) for k, v in headers)
        upgrade = None
        connection = b",".join(v for k, v in hdrs if k == b"connection")
        for k, v in hdrs:
            if k == b"upgrade":
                upgrade = v
                break
        websocket = (
            method == b"GET"
            and http_version == b"1.1"
            and has_token(upgrade, b"websocket")
            and has_token(connection, b"upgrade")
        )
        return cls(
            method=method.decode("ascii"),
            target=target,
            path=path,
            query=query,
            headers=hdrs,
            http_version=http_version.decode("ascii"),
            scheme=scheme,
            client=client,
            server=server,
            websocket=websocket,
            upgrade=upgrade,
        )
