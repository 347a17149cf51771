"""Request dispatch: route a request to its handler."""

from __future__ import annotations

import logging
import os
from typing import assert_never, final

from wstrio._config import ServerConfig
from wstrio._io.backends.pool import BackendConnector, RouteBackends, make_route_backends
from wstrio._io.handlers.cgi.cgi import handle_cgi
from wstrio._io.handlers.cgi.fastcgi import handle_fastcgi
from wstrio._io.handlers.cgi.scgi import handle_scgi
from wstrio._io.handlers.proxy import handle_proxy
from wstrio._io.handlers.static import serve_static
from wstrio._io.handlers.wstunnel import handle_wstunnel
from wstrio._io.http.exchange import ClientGone, Exchange, send_simple
from wstrio._io.streams.fastpath.hub import Hub
from wstrio._io.streams.tunnel import TimerService
from wstrio._sansio.routing import Router

__all__ = ["ServerContext"]

log = logging.getLogger("wstrio.connection")


@final
class ServerContext:
    """What every connection of one server shares: config, routes, backends."""

    def __init__(self, config: ServerConfig, connector: BackendConnector, *, spawn: bool = True) -> None:
        self.config = config
        self.router = Router(config.routes)
        self.backends: dict[int, RouteBackends] = make_route_backends(config.routes, connector, spawn=spawn)
        self._route_index = {id(r): i for i, r in enumerate(config.routes)}
        self.real_root = os.path.realpath(config.document_root) if config.document_root is not None else None
        self.timers = TimerService()
        self.hub = Hub()

    def backends_for(self, index: int) -> RouteBackends:
        return self.backends[index]

    async def dispatch(self, exchange: Exchange) -> None:
        """Answer one request; never raises for a handler's own failure."""
        request = exchange.request
        route = self.router.match(request)
        try:
            if route is None:
                await serve_static(exchange, self.config, self.real_root)
                return
            index = self._route_index[id(route)]
            if route.handler == "wstunnel":
                await handle_wstunnel(exchange, route, self.backends[index], self.config, self.timers, self.hub)
            elif route.handler == "proxy":
                await handle_proxy(exchange, route, self.backends[index], self.config, self.hub)
            elif route.handler == "cgi":
                await handle_cgi(exchange, route, self.config, self.real_root, self.dispatch)
            elif route.handler == "scgi":
                await handle_scgi(exchange, route, self.backends[index], self.config, self.real_root, self.dispatch)
            elif route.handler == "fastcgi":
                await handle_fastcgi(exchange, route, self.backends[index], self.config, self.real_root, self.dispatch)
            else:
                assert_never(route.handler)  # mypy: every handler name is covered
        except ClientGone:
            raise
        except Exception:
            log.exception("error while handling %s %s", request.method, request.target.decode("latin-1"))
            if not exchange.response_started:
                await send_simple(exchange, 500)
