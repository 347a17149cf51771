"""Reverse-proxy header rules: the request head a backend gets.

Theory of operation
-------------------
The ``proxy`` handler (:mod:`wstrio._io.handlers.proxy`) first asks
:func:`~wstrio._sansio.upgrade.plan_request` how the request is forwarded
(the switch rules it shares with the CGI family), then
:func:`backend_request` for the HTTP/1.1 request head: the client's
end-to-end headers in order (hop-by-hop ones removed, RFC 9110 section
7.6.1, :mod:`wstrio._sansio.http.headers`), ``Host`` kept or replaced
(:func:`host_header`), ``X-Forwarded-For`` appended to, ``X-Forwarded-Host``
and ``X-Forwarded-Proto`` set, an RFC 7239 ``Forwarded`` element
(:func:`forwarded_element`) appended when the route asks for it, and
``Connection: close`` (no keep-alive to backends, as lighttpd).  The
request-target is the one wstrio routed on, unless the route says otherwise
(:func:`backend_target`, ``proxy-target``).  The backend's answer is judged
by :func:`~wstrio._sansio.upgrade.judge_response`.

Header names are lower-case everywhere (h11 and h2 hand them over that way).

Never imports trio.
"""

from __future__ import annotations

import ipaddress
import re
from typing import final
from urllib.parse import quote, unquote_to_bytes

import attrs

from wstrio._config import Backend, ProxyTarget
from wstrio._errors import BadRequest
from wstrio._sansio.http.headers import Headers, remove_hop_by_hop
from wstrio._sansio.http.request import Request
from wstrio._sansio.upgrade import ProxyPlan

__all__ = ["BackendRequest", "backend_request", "backend_target", "forwarded_element", "host_header"]

# Set by the proxy itself; a client's value is dropped, never trusted.
_REPLACED_REQUEST = frozenset({b"host", b"content-length", b"x-forwarded-host", b"x-forwarded-proto"})
# "Proxy" is not a real header; it is removed against httpoxy, as lighttpd does.
_DROPPED_REQUEST = frozenset({b"proxy"})
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


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


# pchar (RFC 3986 section 3.3) besides unreserved: kept as they are when the
# normalised path is encoded again; everything else is percent-encoded.
_PATH_SAFE = "/!$&'()*+,;=:@"


def backend_target(request: Request, mode: ProxyTarget) -> bytes:
    """The request-target sent to the backend, by the route's ``proxy-target``.

    Routes match :attr:`Request.path` (decoded, dot-segments resolved, empty
    segments dropped), so the backend must not get a target that says
    something else: ``/admin/..%2fproxy/x`` takes a ``/proxy/`` route and,
    sent on raw, may be read as ``/admin/...`` by the backend.

    * ``normalized``: :attr:`Request.path` percent-encoded again (every byte
      that is not a pchar, so ``%2F``, ``?`` and ``#`` in a segment stay
      encoded, and ``%2F`` becomes ``/``), then the query exactly as sent;
    * ``reject``: the target as sent if decoding alone gives
      :attr:`Request.path`, else a 400 (a ``.``/``..`` or empty segment,
      raw or encoded);
    * ``raw``: the target as sent.

    ``*`` (``OPTIONS *``) goes on as it is in every mode.

    Raises:
        BadRequest: 400 (``reject`` only).
    """
    target = request.target
    if mode == "raw" or target == b"*":
        return target
    raw_path, sep, query = target.partition(b"?")
    raw_path = raw_path.partition(b"#")[0]
    if not raw_path.startswith(b"/") and b"://" in raw_path:
        # absolute-form: the path starts after the authority.
        rest = raw_path.partition(b"://")[2]
        raw_path = b"/" + rest.partition(b"/")[2] if b"/" in rest else b"/"
    if mode == "reject":
        if unquote_to_bytes(raw_path) != request.path.encode("utf-8"):
            msg = f"request-target {target[:80]!r} is not in normal form (proxy-target = reject)"
            raise BadRequest(msg, 400)
        return raw_path + sep + query
    return quote(request.path, safe=_PATH_SAFE).encode("ascii") + sep + query


def _quote(value: str) -> str:
    if _TOKEN.fullmatch(value.encode("latin-1", "replace")):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def forwarded_element(request: Request) -> bytes:
    """This hop's RFC 7239 ``Forwarded`` element: ``for=...;host=...;proto=...``.

    ``for`` is the address this request came from (IPv6 in brackets,
    quoted; with ``forwarded-trust``, the proxy, not the client it named), or
    ``unknown`` on a unix socket; ``host`` is omitted when the client sent
    none.
    """
    hop = request.peer or request.client  # the trusted proxy, when the client was learned from it
    if hop is None:
        node = "unknown"
    else:
        ip = hop[0]
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
    target: bytes | None = None,
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
        target: the request-target to send (:func:`backend_target`);
            ``None``: the client's, as received.

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
    # The hop this request came from: the trusted proxy when the client was learned from it.
    hop = request.peer or request.client
    if hop is not None:
        chain.append(hop[0].encode("latin-1"))
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
    return BackendRequest(method, request.target if target is None else target, headers)
