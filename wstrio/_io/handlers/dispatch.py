"""Request dispatch: which handler answers a request.

Every handler has one signature, :data:`Handler`: the exchange, the
:class:`~wstrio._io.context.RouteMatch` (the route and its backends) and the
:class:`~wstrio._io.context.ServerContext` (config, document root, timers,
hub, and the way back here for local redirects and declined requests).  A
request no route takes goes to the static files.

Before any handler runs (so before any backend is contacted), the
per-client limits are checked, in this order: the request rate of the
client's address (429 with ``Retry-After``), the route's ``allow``/``deny``
(403), the route's ``max-connections-per-ip`` (429 with ``Retry-After``,
held for the handler's whole run: a tunnel counts while it is open), and
for a WebSocket on a wstunnel route or an upgrade route ``max-tunnels``,
server-wide and per route (503 with ``Retry-After``).  Each refusal is one
INFO line with the address and the limit.

This is the one module that knows every handler; handlers never import
each other (a test checks it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

import trio

from wstrio._config import HandlerName
from wstrio._errors import ClientGone
from wstrio._io.handlers import process, proxy, static, wstunnel
from wstrio._io.handlers.cgi import cgi, fastcgi, scgi
from wstrio._io.handlers.cgi.redirect import RedirectedExchange
from wstrio._io.http.exchange import Exchange, send_simple
from wstrio._sansio.limits import BUSY_RETRY_AFTER, allowed, client_key

if TYPE_CHECKING:
    from wstrio._io.context import RouteMatch, ServerContext

__all__ = ["BUSY_RETRY_AFTER", "HANDLERS", "Handler", "dispatch", "serve_unrouted"]

log = logging.getLogger("wstrio.connection")

Handler = Callable[[Exchange, "RouteMatch", "ServerContext"], Awaitable[None]]
"""``handle(exchange, match, ctx)``: answer one request on a matching route.

Error handling: a handler answers its own failures (and logs them); only
:class:`~wstrio._errors.ClientGone` may propagate.  Anything else is a bug,
logged by :func:`dispatch` and answered 500 if nothing was sent yet.
"""

HANDLERS: Mapping[HandlerName, Handler] = {
    "wstunnel": wstunnel.handle,
    "proxy": proxy.handle,
    "cgi": cgi.handle,
    "scgi": scgi.handle,
    "fastcgi": fastcgi.handle,
    "process": process.handle,
}
"""The handler of each ``handler =`` name (a test checks every name is here)."""


_NO_FIELDS: Mapping[str, object] = {}


async def _refuse(exchange: Exchange, status: int, why: str, retry_after: int | None = None) -> None:
    request = exchange.request
    peer = f"{request.client[0]}:{request.client[1]}" if request.client else "unix"
    log.info("%s: %s %s refused (%d): %s", peer, request.method, request.path, status, why)
    exchange.set_log_note(why)
    headers = [(b"retry-after", str(retry_after).encode())] if retry_after is not None else []
    await send_simple(exchange, status, headers=headers)


async def dispatch(exchange: Exchange, ctx: ServerContext) -> None:
    """Answer one request; never raises for a handler's own failure.

    The per-client limits come first (see the module docstring).

    Raises:
        ClientGone: the client went away (the HTTP layer ends the connection).
    """
    request = exchange.request
    # Counted when the request ends (metrics), here rather than in a wrapper:
    # no second coroutine frame stays alive under every idle tunnel.
    counters = ctx.services.counters
    top = not isinstance(exchange, RedirectedExchange)  # a local redirect is not a new request
    h2 = request.h2 and top
    if h2:
        counters.h2_streams_open += 1
    match = None
    try:
        health = ctx.config.health_path
        if health is not None and request.path == health and request.method in ("GET", "HEAD"):
            # A load balancer's health check: before the limits (a balancer
            # checking every 200 ms must not use up its own request-rate).
            exchange.set_log_note("health check")
            await send_simple(exchange, 200, b"ok\n" if request.method == "GET" else b"")
            return
        host = request.client[0] if request.client else None
        key = client_key(host)
        if top:
            wait = ctx.request_rate.take(key, trio.current_time())
            if wait is not None:
                await _refuse(exchange, 429, f"over request-rate ({ctx.config.request_rate:g}/s)", wait)
                return
        match = ctx.match(request)
        if match is None:
            await _run(exchange, None, ctx)
            return
        route = match.route
        exchange.set_log_fields(route=route.path)
        if not allowed(host, route.allow, route.deny):
            await _refuse(exchange, 403, f"the client address is not allowed on route {match.index} (allow/deny)")
            return
        state = match.state
        per_ip = state.per_ip
        if per_ip is not None and not per_ip.acquire(key):
            why = f"over route {match.index}'s max-connections-per-ip ({route.max_connections_per_ip})"
            await _refuse(exchange, 429, why, BUSY_RETRY_AFTER)
            return
        try:
            tunnel = request.websocket and (route.handler in ("wstunnel", "process") or route.upgrade)
            if not tunnel:
                await _run(exchange, match, ctx)
                return
            if ctx.services.tunnels >= ctx.config.effective_max_tunnels:
                why = f"max-tunnels ({ctx.config.effective_max_tunnels}) WebSockets are open"
                await _refuse(exchange, 503, why, BUSY_RETRY_AFTER)
                return
            if route.max_tunnels and state.tunnels >= route.max_tunnels:
                why = f"route {match.index}'s max-tunnels ({route.max_tunnels}) WebSockets are open"
                await _refuse(exchange, 503, why, BUSY_RETRY_AFTER)
                return
            services = ctx.services
            services.tunnels += 1
            state.tunnels += 1
            try:
                await _run(exchange, match, ctx)
            finally:
                services.tunnels -= 1
                state.tunnels -= 1
        finally:
            if per_ip is not None:
                per_ip.release(key)
    finally:
        if h2:
            counters.h2_streams_open -= 1
        if top:
            fields: Mapping[str, object] = getattr(exchange, "log_fields", _NO_FIELDS)
            label = match.label if match is not None else None
            counters.finished(label, getattr(exchange, "status", None), request.websocket, fields)


async def _run(exchange: Exchange, match: RouteMatch | None, ctx: ServerContext) -> None:
    request = exchange.request
    try:
        if match is None:
            await static.handle(exchange, None, ctx)
        else:
            await HANDLERS[match.route.handler](exchange, match, ctx)
    except ClientGone:
        raise
    except Exception:
        log.exception("error while handling %s %s", request.method, request.target.decode("latin-1"))
        if not exchange.response_started:
            await send_simple(exchange, 500)


async def serve_unrouted(exchange: Exchange, ctx: ServerContext) -> None:
    """Answer ``exchange`` as a request no route takes: the static files."""
    await static.handle(exchange, None, ctx)
