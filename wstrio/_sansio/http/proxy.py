"""Reverse-proxy policy: what goes to the backend, what comes back.

Theory of operation
-------------------
The ``proxy`` handler (:mod:`wstrio._io.handlers.proxy`) asks three questions, all
answered here without I/O:

1. :func:`plan_request` -- how is this request forwarded?  As plain HTTP,
   as an HTTP/1.1 protocol upgrade passed through (``Upgrade`` of any token
   but ``h2c``), or as an HTTP/2 WebSocket (RFC 8441 extended CONNECT)
   translated into an HTTP/1.1 ``Upgrade: websocket`` for the backend.  It
   also says how the request body is framed.  lighttpd's rules (reference
   section 4.1): an upgrade passes only when the route has
   ``upgrade = true``, the request is HTTP/1.1 and has no body; otherwise
   ``Upgrade`` is removed and the request goes on as plain HTTP.  HTTP/2
   extended CONNECT without ``upgrade = true`` is a 405.
2. :func:`backend_request` -- the HTTP/1.1 request head for the backend:
   the client's end-to-end headers in order (hop-by-hop ones removed, RFC
   9110 section 7.6.1), ``Host`` kept or replaced, ``X-Forwarded-For``
   appended to, ``X-Forwarded-Host`` and ``X-Forwarded-Proto`` set, an RFC
   7239 ``Forwarded`` element appended when the route asks for it, and
   ``Connection: close`` (no keep-alive to backends, as lighttpd).
3. :func:`judge_response` -- what the backend's answer becomes: a
   :class:`Switch` (101, then raw bytes), a :class:`Forward` (an ordinary
   response, hop-by-hop headers removed) or a :class:`Reject` (502 for an
   invalid upgrade answer, 405 for a 2xx that does not upgrade an HTTP/2
   WebSocket).

Header names are lower-case everywhere (h11 and h2 hand them over that way).

Never imports trio.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from typing import Literal, final

import attrs
from wsproto.utilities import generate_accept_token

from wstrio._config import Backend, Route
from wstrio._errors import HandshakeRejected
from wstrio._sansio.http.request import Request, has_token

__all__ = [
    "HOP_BY_HOP",
    "BackendRequest",
    "Forward",
    "ProxyPlan",
    "Reject",
    "Switch",
    "backend_request",
    "connection_options",
    "filter_response_headers",
    "forwarded_element",
    "host_header",
    "judge_response",
    "new_websocket_key",
    "plan_request",
    "remove_hop_by_hop",
]

Headers = list[tuple[bytes, bytes]]
Mode = Literal["http", "upgrade", "websocket-h2"]
BodyFraming = Literal["none", "length", "chunked", "unknown"]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        # Trailers are not forwarded (the exchange has no way to carry
        # them), so announcing them would be a lie.
        b"trailer",
    }
)
"""Header fields that describe one connection, never forwarded (RFC 9110 section 7.6.1).

Fields named in ``Connection`` are removed as well."""

# Set by the proxy itself; a client's value is dropped, never trusted.
_REPLACED_REQUEST = frozenset({b"host", b"content-length", b"x-forwarded-host", b"x-forwarded-proto"})
# "Proxy" is not a real header; it is removed against httpoxy, as lighttpd does.
_DROPPED_REQUEST = frozenset({b"proxy"})
# The exchange writes its own Date and Server (as nginx does by default).
_DROPPED_RESPONSE = frozenset({b"date", b"server"})
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def connection_options(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The lower-cased options of every ``Connection`` field in ``headers``."""
    options: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            options.update(part.strip().lower() for part in value.split(b",") if part.strip())
    return frozenset(options)


def remove_hop_by_hop(headers: Iterable[tuple[bytes, bytes]], *, keep: frozenset[bytes] = frozenset()) -> Headers:
    """``headers`` without the hop-by-hop fields and the fields ``Connection`` names.

    Args:
        headers: lower-cased ``(name, value)`` pairs, in order.
        keep: names to keep even though they are hop-by-hop (``upgrade``
            for a 101 passed through).

    Returns:
        the remaining fields, in their original order.
    """
    headers = list(headers)
    drop = (HOP_BY_HOP | connection_options(headers)) - keep
    return [(name, value) for name, value in headers if name not in drop]


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
        raise HandshakeRejected(msg, 400)
    return int(values.pop())


def plan_request(request: Request, route: Route) -> ProxyPlan:
    """Decide how ``request`` is forwarded on a proxy ``route``.

    Returns:
        the plan.

    Raises:
        HandshakeRejected: 405 for ``CONNECT`` (a tunnel to anywhere, which a
            reverse proxy does not offer) and for an HTTP/2 extended CONNECT
            on a route without ``upgrade = true`` or with a ``:protocol``
            other than ``websocket``; 400 for an unusable ``Content-Length``.
    """
    if request.h2 and request.websocket:
        if not route.upgrade:
            msg = "WebSocket over HTTP/2 (extended CONNECT) needs upgrade = true on this proxy route"
            raise HandshakeRejected(msg, 405)
        return ProxyPlan("websocket-h2", "none", upgrade=b"websocket")
    if request.method == "CONNECT":
        what = f"extended CONNECT for {request.upgrade!r}" if request.h2 and request.upgrade else "CONNECT"
        msg = f"{what} is not proxied"
        raise HandshakeRejected(msg, 405)

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


def host_header(request: Request, backend: Backend, *, replace: bool) -> bytes:
    """The ``Host`` sent to ``backend``.

    The client's ``Host`` (or HTTP/2 ``:authority``), unless ``replace``
    (``replace-http-host``) or the client sent none (HTTP/1.0): then the
    backend's ``label``, else its ``host[:port]`` (``localhost`` for a unix
    socket without a label).
    """
    client_host = request.header(b"host")
    if not replace and client_host is not None and client_host.strip():
        return client_host.strip()
    if backend.label:
        return backend.label.encode("latin-1")
    if backend.socket is not None or not backend.host:
        return b"localhost"
    host = f"[{backend.host}]" if ":" in backend.host else backend.host
    if backend.port not in (None, 80):
        host = f"{host}:{backend.port}"
    return host.encode("latin-1")


def _quote(value: str) -> str:
    if _TOKEN.fullmatch(value.encode("latin-1", "replace")):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def forwarded_element(request: Request) -> bytes:
    """This hop's RFC 7239 ``Forwarded`` element: ``for=...;host=...;proto=...``.

    ``for`` is the client's IP address (IPv6 in brackets, quoted), or
    ``unknown`` on a unix socket; ``host`` is omitted when the client sent
    none.
    """
    if request.client is None:
        node = "unknown"
    else:
        ip = request.client[0]
        try:
            node = f"[{ip}]" if ipaddress.ip_address(ip).version == 6 else ip
        except ValueError:
            node = ip
    parts = [f"for={_quote(node)}"]
    host = request.header(b"host")
    if host is not None and host.strip():
        parts.append(f"host={_quote(host.strip().decode('latin-1'))}")
    parts.append(f"proto={_quote(request.scheme)}")
    return ";".join(parts).encode("latin-1")


@final
@attrs.frozen
class BackendRequest:
    """The HTTP/1.1 request head sent to the backend."""

    method: bytes
    target: bytes
    headers: Headers


def backend_request(
    request: Request,
    plan: ProxyPlan,
    *,
    host: bytes,
    forwarded: bool = False,
    websocket_key: bytes | None = None,
) -> BackendRequest:
    """Build the backend's request head.

    Args:
        request: the client's request.
        plan: from :func:`plan_request`; ``plan.body`` must not be
            ``"unknown"`` any more.
        host: the ``Host`` value (:func:`host_header`).
        forwarded: append an RFC 7239 ``Forwarded`` element.
        websocket_key: for ``websocket-h2``: the ``Sec-WebSocket-Key`` to
            send (:func:`new_websocket_key`).

    Returns:
        method, target and headers.  Headers are, in order: ``host``; the
        client's end-to-end fields in their order; the body framing; the
        upgrade fields; ``x-forwarded-for`` (the client's chain plus the
        client's address), ``x-forwarded-host``, ``x-forwarded-proto``,
        ``forwarded`` (when asked); ``connection``.
    """
    if plan.body == "unknown":
        msg = "backend_request() needs the body framing settled (not 'unknown')"
        raise ValueError(msg)
    drop = _REPLACED_REQUEST | _DROPPED_REQUEST | {b"x-forwarded-for"}
    if forwarded:
        drop |= {b"forwarded"}  # extended below
    if plan.mode == "websocket-h2":
        # RFC 8441 streams carry no key; the version is set below, once.
        drop |= {b"sec-websocket-key", b"sec-websocket-version"}
    headers: Headers = [(b"host", host)]
    cookies: list[bytes] = []
    for name, value in remove_hop_by_hop(request.headers):
        if name in drop:
            continue
        if request.h2 and name == b"cookie":
            # HTTP/2 may split Cookie into several fields; HTTP/1.1 wants
            # one (RFC 9113 section 8.2.3).
            cookies.append(value)
            continue
        headers.append((name, value))
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))

    if plan.body == "length":
        headers.append((b"content-length", str(plan.content_length).encode()))
    elif plan.body == "chunked":
        headers.append((b"transfer-encoding", b"chunked"))

    connection = b"close"
    if plan.mode == "upgrade":
        assert plan.upgrade is not None
        headers.append((b"upgrade", plan.upgrade))
        connection = b"close, upgrade"
    elif plan.mode == "websocket-h2":
        if websocket_key is None:
            msg = "a websocket-h2 plan needs a websocket_key"
            raise ValueError(msg)
        headers += [
            (b"upgrade", b"websocket"),
            (b"sec-websocket-key", websocket_key),
            (b"sec-websocket-version", b"13"),
        ]
        connection = b"close, upgrade"

    chain = [v.strip() for v in request.header_values(b"x-forwarded-for") if v.strip()]
    if request.client is not None:
        chain.append(request.client[0].encode("latin-1"))
    if chain:
        headers.append((b"x-forwarded-for", b", ".join(chain)))
    client_host = request.header(b"host")
    if client_host is not None and client_host.strip():
        headers.append((b"x-forwarded-host", client_host.strip()))
    headers.append((b"x-forwarded-proto", request.scheme.encode("ascii")))
    if forwarded:
        elements = [v.strip() for v in request.header_values(b"forwarded") if v.strip()]
        elements.append(forwarded_element(request))
        headers.append((b"forwarded", b", ".join(elements)))
    # Without ``forwarded`` a client's Forwarded passes unchanged, as with lighttpd.
    headers.append((b"connection", connection))
    method = b"GET" if plan.mode == "websocket-h2" else request.method.encode("ascii")
    return BackendRequest(method, request.target, headers)


def filter_response_headers(headers: Sequence[tuple[bytes, bytes]]) -> Headers:
    """The backend's response fields as the client gets them.

    Hop-by-hop fields and those ``Connection`` names are removed, so are
    ``Date`` and ``Server`` (the exchange writes its own) and, when the
    backend sent ``Transfer-Encoding``, ``Content-Length`` (it does not
    describe the decoded body; RFC 9112 section 6.3).  The exchange
    chooses the framing towards the client.
    """
    chunked = any(name == b"transfer-encoding" for name, _ in headers)
    out = remove_hop_by_hop(headers)
    return [
        (name, value)
        for name, value in out
        if name not in _DROPPED_RESPONSE and not (chunked and name == b"content-length")
    ]


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
            if name not in _DROPPED_RESPONSE and name != b"content-length"  # 101 has no body (#3063)
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
