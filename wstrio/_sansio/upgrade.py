"""When a request switches protocols: the rules the reverse proxy and the CGI family share.

Theory of operation
-------------------
The ``proxy`` handler (:mod:`wstrio._io.handlers.proxy`) and the CGI family
(:mod:`wstrio._io.handlers.cgi.common`) ask two questions here, both
answered without I/O:

1. :func:`plan_request` -- how is this request forwarded?  As plain HTTP,
   as an HTTP/1.1 protocol upgrade passed through (``Upgrade`` of any token
   but ``h2c``), or as an HTTP/2 WebSocket (RFC 8441 extended CONNECT)
   translated into an HTTP/1.1 ``Upgrade: websocket`` for the backend (with
   a fresh key, :func:`new_websocket_key`).  It also says how the request
   body is framed.  lighttpd's rules (reference section 4.1): an upgrade
   passes only when the route has ``upgrade = true``, the request is
   HTTP/1.1 and has no body; otherwise ``Upgrade`` is removed and the
   request goes on as plain HTTP.  HTTP/2 extended CONNECT without
   ``upgrade = true`` is a 405.
2. :func:`judge_response` -- what the backend's answer becomes: a
   :class:`Switch` (101, then raw bytes), a :class:`Forward` (an ordinary
   response, hop-by-hop headers removed) or a :class:`Reject` (502 for an
   invalid upgrade answer, 405 for a 2xx that does not upgrade an HTTP/2
   WebSocket).

What the reverse proxy alone sends to its backend (``Host``,
``X-Forwarded-*``, ``Forwarded``) is in :mod:`wstrio._sansio.http.proxy`;
the hop-by-hop rules both use are in :mod:`wstrio._sansio.http.headers`.

Header names are lower-case everywhere (h11 and h2 hand them over that way).

Never imports trio.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from typing import Literal, final

import attrs
from wsproto.utilities import generate_accept_token

from wstrio._config import Route
from wstrio._errors import BadRequest
from wstrio._sansio.http.headers import DROPPED_RESPONSE, Headers, filter_response_headers, remove_hop_by_hop
from wstrio._sansio.http.request import Request, has_token

__all__ = [
    "BodyFraming",
    "Forward",
    "Mode",
    "ProxyPlan",
    "Reject",
    "Switch",
    "judge_response",
    "new_websocket_key",
    "plan_request",
]

Mode = Literal["http", "upgrade", "websocket-h2"]
BodyFraming = Literal["none", "length", "chunked", "unknown"]


@final
@attrs.frozen
class ProxyPlan:
    """How one request is forwarded (see :func:`plan_request`)."""

    mode: Mode
    """``"http"``; ``"upgrade"`` (HTTP/1.1 ``Upgrade`` passed through); or
    ``"websocket-h2"`` (an RFC 8441 WebSocket sent on as HTTP/1.1)."""
    body: BodyFraming
    """``"none"``, ``"length"`` (``content_length`` bytes), ``"chunked"``, or
    ``"unknown"`` (HTTP/2 without ``content-length``: the handler looks at the
    first chunk and settles on ``"none"`` or ``"chunked"``)."""
    content_length: int | None = None
    """The body length for ``body == "length"``."""
    upgrade: bytes | None = None
    """The ``Upgrade`` value sent to the backend (``h2c`` never is)."""
    note: str = ""
    """Why a client's ``Upgrade`` was not passed on, for the log (empty otherwise)."""


def _content_length(request: Request) -> int | None:
    values = {v.strip() for v in request.header_values(b"content-length")}
    if not values:
        return None
    if len(values) > 1 or not all(v.isdigit() for v in values):
        msg = f"invalid Content-Length {sorted(values)!r}"
        raise BadRequest(msg, 400)
    return int(values.pop())


def plan_request(request: Request, route: Route) -> ProxyPlan:
    """Decide how ``request`` is forwarded on a proxy ``route``.

    Returns:
        the plan.

    Raises:
        BadRequest: 405 for ``CONNECT`` (a tunnel to anywhere, which a
            reverse proxy does not offer) and for an HTTP/2 extended CONNECT
            on a route without ``upgrade = true`` or with a ``:protocol``
            other than ``websocket``; 400 for an unusable ``Content-Length``.
    """
    if request.h2 and request.websocket:
        if not route.upgrade:
            msg = "WebSocket over HTTP/2 (extended CONNECT) needs upgrade = true on this proxy route"
            raise BadRequest(msg, 405)
        return ProxyPlan("websocket-h2", "none", upgrade=b"websocket")
    if request.method == "CONNECT":
        what = f"extended CONNECT for {request.upgrade!r}" if request.h2 and request.upgrade else "CONNECT"
        msg = f"{what} is not proxied"
        raise BadRequest(msg, 405)

    length = _content_length(request)
    body: BodyFraming
    if not request.h2 and request.header(b"transfer-encoding") is not None:
        # Transfer-Encoding beats Content-Length (RFC 9112 section 6.3); the
        # client's Content-Length is dropped so the backend cannot be told
        # two different lengths (request smuggling).
        body, length = "chunked", None
    elif length is not None:
        body = "length" if length else "none"
    else:
        body = "unknown" if request.h2 else "none"

    upgrade = None if request.h2 else request.header(b"upgrade")
    if upgrade is None:
        return ProxyPlan("http", body, length)
    tokens = [t.strip() for t in upgrade.split(b",") if t.strip()]
    # h2c is the server's own business (RFC 9113 dropped it); never a backend's.
    wanted = [t for t in tokens if t.split(b"/", 1)[0].lower() != b"h2c"]
    connection = b",".join(request.header_values(b"connection"))
    if not route.upgrade:
        note = "Upgrade removed: upgrade is off on this route"
    elif request.http_version != "1.1":
        note = f"Upgrade removed: HTTP/{request.http_version} cannot upgrade"
    elif body != "none":
        note = "Upgrade removed: the request has a body"
    elif not has_token(connection, b"upgrade"):
        # RFC 9110 section 7.8: Upgrade means nothing unless Connection lists it.
        note = "Upgrade removed: Connection does not list upgrade"
    elif not wanted:
        note = "Upgrade removed: h2c is never passed on"
    else:
        return ProxyPlan("upgrade", body, length, upgrade=b", ".join(wanted))
    return ProxyPlan("http", body, length, note=note)


def new_websocket_key() -> bytes:
    """A fresh random ``Sec-WebSocket-Key`` (RFC 6455 section 4.1; lighttpd sends a fixed one)."""
    return base64.b64encode(os.urandom(16))


@final
@attrs.frozen
class Forward:
    """Send the backend's response on as an ordinary response."""

    status: int
    headers: Headers


@final
@attrs.frozen
class Switch:
    """Switch protocols: send ``status`` (101, or 200 for HTTP/2) with ``headers``, then relay bytes."""

    status: int
    headers: Headers


@final
@attrs.frozen
class Reject:
    """Do not pass the backend's answer on; answer ``status`` instead."""

    status: int
    reason: str


def judge_response(
    plan: ProxyPlan,
    status: int,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    websocket_key: bytes | None = None,
) -> Forward | Switch | Reject:
    """Decide what the backend's final response (or 101) becomes for the client.

    Args:
        plan: the request's plan.
        status: the backend's status (101 or >= 200; other 1xx are skipped
            before this is asked).
        headers: the backend's lower-cased header fields.
        websocket_key: the key sent for a ``websocket-h2`` plan; the
            backend's ``Sec-WebSocket-Accept`` must match it.

    Returns:
        :class:`Switch` for a valid 101 to an upgrade, :class:`Reject` (502)
        for a 101 wstrio cannot pass on and (405) for a 2xx that does not
        upgrade an HTTP/2 WebSocket (lighttpd, reference section 4.2),
        :class:`Forward` for everything else.
    """
    if status == 101:
        if plan.mode == "http":
            return Reject(502, "the backend switched protocols although no upgrade was asked for")
        upgrade = [v for name, v in headers if name == b"upgrade"]
        if not upgrade:
            return Reject(502, "the backend's 101 has no Upgrade header")
        kept = [
            (name, value)
            for name, value in remove_hop_by_hop(headers, keep=frozenset({b"upgrade"}))
            if name not in DROPPED_RESPONSE and name != b"content-length"  # 101 has no body (#3063)
        ]
        if plan.mode == "upgrade":
            # lighttpd drops the backend's Connection and writes its own.
            return Switch(101, [*kept, (b"connection", b"upgrade")])
        if not has_token(b",".join(upgrade), b"websocket"):
            return Reject(502, f"the backend upgraded to {upgrade[0]!r}, not websocket")
        accept = [v.strip() for name, v in headers if name == b"sec-websocket-accept"]
        if websocket_key is not None and accept != [generate_accept_token(websocket_key)]:
            return Reject(502, f"the backend's Sec-WebSocket-Accept {accept!r} does not match the key sent")
        # RFC 8441: a 200 on the stream; Upgrade and Accept mean nothing there.
        drop = {b"upgrade", b"sec-websocket-accept"}
        return Switch(200, [(name, value) for name, value in kept if name not in drop])
    if plan.mode == "websocket-h2" and 200 <= status < 300:
        return Reject(405, f"the backend answered {status} instead of upgrading to WebSocket")
    return Forward(status, filter_response_headers(headers))
