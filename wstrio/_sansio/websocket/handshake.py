"""WebSocket handshake policy for wstunnel routes.

Checks run in lighttpd's order (reference section 2.3) and give lighttpd's
answers, with its bugs fixed:

1. ``Host`` present and not blank, else 400.
2. When the route lists ``origins``: a missing ``Origin`` is 400, one not
   allowed is 403.
3. ``Sec-WebSocket-Version`` must be 13, else 400 *with*
   ``Sec-WebSocket-Version: 13`` (lighttpd loses that header).
4. HTTP/1.1 only: exactly one ``Sec-WebSocket-Key`` (RFC 6455 section
   11.3.1), base64 of 16 bytes, else 400.
   lighttpd checks only presence, and only after connecting to the backend;
   we check before connecting, so a bad request never costs a backend
   connection.

Then the handler connects to the backend (503 if none can be reached) and
only then sends the 101 (or the HTTP/2 200).

Never imports trio.
"""

from __future__ import annotations

import base64
import binascii
from typing import final
from urllib.parse import urlsplit

import attrs
from wsproto.utilities import generate_accept_token

from wstrio._config import Route
from wstrio._errors import HandshakeRejected
from wstrio._sansio.http.request import Request

__all__ = ["WebSocketAccept", "accept_headers", "check_websocket", "origin_allowed"]

_VERSION_HINT = ((b"sec-websocket-version", b"13"),)
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _parsed_origin(value: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS.get(scheme)


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    """True if the ``Origin`` value matches one of the ``allowed`` entries.

    Two kinds of entry:

    * ``scheme://host[:port]`` (contains ``://``): an exact origin.  Scheme and
      host compare case-insensitively and a default port may be left out, so
      ``http://Example.com`` matches ``http://example.com:80``; subdomains do
      not match.
    * anything else, e.g. ``example.com``: lighttpd's suffix rule.  It matches
      an origin equal to it or ending in ``.`` + entry, so ``example.com``
      matches ``http://www.example.com`` (any scheme and subdomain) but *not*
      ``http://example.com`` — list ``http://example.com`` as well for that.
      Unlike lighttpd, the comparison ignores case.
    * ``null`` matches the literal ``Origin: null`` (``file://`` pages).
    """
    lowered = origin.lower()
    parsed: tuple[str, str, int | None] | bool | None = False
    for entry in allowed:
        if "://" in entry:
            if parsed is False:
                parsed = _parsed_origin(origin)
            if parsed is not None and parsed == _parsed_origin(entry):
                return True
            continue
        suffix = entry.lower()
        if lowered == suffix or (lowered.endswith(suffix) and lowered[-len(suffix) - 1 : -len(suffix)] == "."):
            return True
    return False


@final
@attrs.frozen
class WebSocketAccept:
    """What a successful handshake agreed on."""

    binary: bool
    """Backend data goes to the client in binary frames (else text)."""
    subprotocol: str | None
    """The ``Sec-WebSocket-Protocol`` to answer (``binary``/``base64``) or ``None``."""
    key: bytes | None
    """The client's ``Sec-WebSocket-Key`` (HTTP/1.1 only)."""


def _protocol_tokens(request: Request) -> list[str]:
    tokens: list[str] = []
    for value in request.header_values(b"sec-websocket-protocol"):
        tokens.extend(t.strip().lower() for t in value.decode("latin-1").split(",") if t.strip())
    return tokens


def check_websocket(request: Request, route: Route) -> WebSocketAccept:
    """Validate a WebSocket handshake for a wstunnel ``route``.

    Returns:
        the agreed frame type and subprotocol.

    Raises:
        HandshakeRejected: 400 or 403, with the headers to send.
    """
    if not request.host.strip():
        msg = "WebSocket handshake without a Host header"
        raise HandshakeRejected(msg, 400)
    if route.origins:
        origin = request.header(b"origin")
        if origin is None or not origin.strip():
            msg = "WebSocket handshake without an Origin header on a route that checks origins"
            raise HandshakeRejected(msg, 400)
        text = origin.decode("latin-1").strip()
        if not origin_allowed(text, route.origins):
            msg = f"Origin {text!r} is not allowed"
            raise HandshakeRejected(msg, 403)
    version = request.header(b"sec-websocket-version")
    if version is None:
        msg = "WebSocket handshake without Sec-WebSocket-Version"
        raise HandshakeRejected(msg, 400, _VERSION_HINT)
    if version.strip() not in (b"13", b"013"):
        msg = f"unsupported Sec-WebSocket-Version {version!r}; only 13 is supported"
        raise HandshakeRejected(msg, 400, _VERSION_HINT)
    key = None
    if not request.h2:
        keys = request.header_values(b"sec-websocket-key")
        if not keys:
            msg = "WebSocket handshake without Sec-WebSocket-Key"
            raise HandshakeRejected(msg, 400)
        if len(keys) > 1:
            msg = "WebSocket handshake with more than one Sec-WebSocket-Key"
            raise HandshakeRejected(msg, 400)
        key = keys[0]
        try:
            decoded = base64.b64decode(key.strip(), validate=True)
        except binascii.Error:
            decoded = b""
        if len(decoded) != 16:
            msg = f"Sec-WebSocket-Key {key!r} is not base64 of 16 bytes"
            raise HandshakeRejected(msg, 400)
        key = key.strip()
    # Subprotocols as lighttpd (reference 2.6): "binary" forces binary frames
    # and is echoed; otherwise "base64" is echoed (data passes unchanged: the
    # backend speaks base64 itself).  Nothing the client did not offer is ever
    # answered (lighttpd 1.4.69 did, and broke noVNC).
    tokens = _protocol_tokens(request)
    subprotocol = None
    if "binary" in tokens:
        subprotocol = "binary"
    elif "base64" in tokens:
        subprotocol = "base64"
    binary = route.frame_type == "binary" or subprotocol == "binary"
    return WebSocketAccept(binary=binary, subprotocol=subprotocol, key=key)


def accept_headers(accept: WebSocketAccept, *, h2: bool) -> list[tuple[bytes, bytes]]:
    """Response headers for the 101 (HTTP/1.1) or the 200 (HTTP/2)."""
    headers: list[tuple[bytes, bytes]] = []
    if not h2:
        assert accept.key is not None
        headers += [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", generate_accept_token(accept.key)),
        ]
    if accept.subprotocol is not None:
        headers.append((b"sec-websocket-protocol", accept.subprotocol.encode("ascii")))
    return headers
