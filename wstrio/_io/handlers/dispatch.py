"""Request dispatch: which handler answers a request.

Every handler has one signature, :data:`Handler`: the exchange, the
:class:`~wstrio._io.context.RouteMatch` (the route and its backends) and the
:class:`~wstrio._io.context.ServerContext` (config, document root, timers,
hub, and the way back here for local redirects and declined requests).  A
request no route takes goes to the static files.

This is the one module that knows every handler; handlers never import
each other (a test checks it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from wstrio._config import HandlerName
from wstrio._errors import ClientGone
from wstrio._io.handlers import proxy, static, wstunnel
from wstrio._io.handlers.cgi import cgi, fastcgi, scgi
from wstrio._io.http.exchange import Exchange, send_simple

if TYPE_CHECKING:
    from wstrio._io.context import RouteMatch, ServerContext

__all__ = ["HANDLERS", "Handler", "dispatch", "serve_unrouted"]

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
}
"""The handler of each ``handler =`` name (a test checks every name is here)."""


async def dispatch(exchange: Exchange, ctx: ServerContext) -> None:
    """Answer one request; never raises for a handler's own failure.

    Raises:
        ClientGone: the client went away (the HTTP layer ends the connection).
    """
    request = exchange.request
    match = ctx.match(request)
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
