"""Request dispatch: route a request to its handler."""

from __future__ import annotations

import logging
import os
from typing import final

from .._config import ServerConfig
from .._sansio.routing import Router
from .backends import BackendConnector, RouteBackends, make_route_backends
from .exchange import ClientGone, Exchange, send_simple
from .proxy import handle_proxy
from .static import serve_static
from .wstunnel import handle_wstunnel

__all__ = ["ServerContext"]

log = logging.getLogger("wstrio.connection")


@final
class ServerContext:
    """What every connection of one server shares: config, routes, backends."""

    def __init__(self, config: ServerConfig, connector: BackendConnector) -> None:
        self.config = config
        self.router = Router(config.routes)
        self.backends: dict[int, RouteBackends] = make_route_backends(config.routes, connector)
        self._route_index = {id(r): i for i, r in enumerate(config.routes)}
        self.real_root = os.path.realpath(config.document_root) if config.document_root is not None else None

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
                await handle_wstunnel(exchange, route, self.backends[index], self.config)
            elif route.handler == "proxy":
                await handle_proxy(exchange, route, self.backends[index], self.config)
            else:
                await send_simple(exchange, 501, f"handler {route.handler!r} is not available\n".encode())
        except ClientGone:
            raise
        except Exception:
            log.exception("error while handling %s %s", request.method, request.target.decode("latin-1"))
            if not exchange.response_started:
                await send_simple(exchange, 500)
