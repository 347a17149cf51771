"""What every connection of one server shares: the server context.

:class:`ServerContext` is built once per server (by :func:`wstrio.serve`
and friends, or by a test) and handed to every handler with the request's
:class:`RouteMatch`:

* the configuration and the document root (symbolic links resolved);
* the router (:class:`~wstrio._sansio.routing.Router`, sans-I/O), which
  names the route by its index, so the route's state is found without a
  lookup by identity;
* per route, its backends (:class:`~wstrio._io.backends.route.RouteBackends`:
  balancing, retries, spawned pools), prebuilt into one immutable
  :class:`RouteMatch` per route;
* the per-client limits (:mod:`wstrio._sansio.limits`): connections per
  address, the request-rate buckets, and per route the requests in
  progress per address; and the count of open tunnels (``max-tunnels``),
  server-wide and per route;
* the server-wide services of the tunnels: the timer task
  (:class:`~wstrio._io.streams.timers.TimerService`) and the hub
  (:class:`~wstrio._io.streams.fastpath.hub.Hub`).  The server runs both
  in its nursery; the context only holds them.

Handlers import this module for types only (``if TYPE_CHECKING:``): it
imports the dispatcher, which imports every handler.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable
from typing import final

import attrs

from wstrio._config import Route, ServerConfig
from wstrio._io.backends.connect import BackendConnector
from wstrio._io.backends.route import RouteBackends, make_route_backends
from wstrio._io.handlers import dispatch as _dispatch
from wstrio._io.http.exchange import Exchange
from wstrio._io.keeper import Keeper
from wstrio._io.reaper import Reaper
from wstrio._io.streams.budget import BufferBudget
from wstrio._io.streams.fastpath.hub import Hub
from wstrio._io.streams.timers import TimerService
from wstrio._sansio.http.request import Request
from wstrio._sansio.limits import ConnectionCounter, RateLimiter
from wstrio._sansio.routing import Router

__all__ = ["RouteMatch", "ServerContext"]


@final
@attrs.frozen
class RouteMatch:
    """The route that takes a request, with what the server keeps for it."""

    route: Route
    """The matching route."""
    index: int
    """Its position in ``config.routes``."""
    _backends: RouteBackends | None

    @property
    def backends(self) -> RouteBackends:
        """The route's backends (every handler but ``cgi`` has some: the config requires them).

        Raises:
            RuntimeError: the route has no backends (a ``cgi`` route).
        """
        if self._backends is None:
            msg = f"route {self.index} ({self.route.handler}) has no backends"
            raise RuntimeError(msg)
        return self._backends


@final
class ServerContext:
    """What every connection of one server shares: config, routes, backends, timers, hub.

    Args:
        config: the server configuration.
        connector: how backends are reached.
        spawn: start ``bin-path`` backends here (``False`` in a worker
            process: the supervisor runs them).
    """

    def __init__(self, config: ServerConfig, connector: BackendConnector, *, spawn: bool = True) -> None:
        self.config = config
        self.router = Router(config.routes)
        self.backends: dict[int, RouteBackends] = make_route_backends(config.routes, connector, spawn=spawn)
        """The backends of every route that has some, by route index (the server starts them)."""
        self.real_root = os.path.realpath(config.document_root) if config.document_root is not None else None
        """The document root, symbolic links resolved (``None``: no static files)."""
        self.connections_per_ip = ConnectionCounter(config.max_connections_per_ip)
        """``server.max-connections-per-ip``: client connections per address (taken by the server's accept side)."""
        self.request_rate = RateLimiter(config.request_rate, config.effective_request_burst)
        """``request-rate``/``request-burst``: a token bucket per address, taken per request."""
        self.route_per_ip = {
            index: ConnectionCounter(route.max_connections_per_ip)
            for index, route in enumerate(config.routes)
            if route.max_connections_per_ip
        }
        """Route ``max-connections-per-ip``: requests (and tunnels) in progress per address, by route index."""
        self.tunnels = 0
        """WebSockets open now (``server.max-tunnels``), over HTTP/1.1 and HTTP/2."""
        self.route_tunnels = dict.fromkeys(range(len(config.routes)), 0)
        """WebSockets open now per route index (route ``max-tunnels``)."""
        self.timers = TimerService()
        self.hub = Hub()
        self.reaper = Reaper()
        """Finishes CGI scripts that outlive their answer, in the background."""
        self.budget = BufferBudget(config.max_buffer_memory)
        """What backpressured tunnels and relays hold, server-wide (``max-buffer-memory``)."""
        self.keeper = Keeper()
        """Kills the process groups this server started if it dies without stopping them."""
        self.starts_programs = any(r.handler == "cgi" for r in config.routes) or (
            spawn and any(b.spawned for r in config.routes for b in r.backends)
        )
        """Whether this server starts processes (CGI scripts, ``bin-path`` pools): then the keeper runs."""
        self.dispatch: Callable[[Exchange], Awaitable[None]] = functools.partial(_dispatch.dispatch, ctx=self)
        """Answer one request (:func:`wstrio._io.handlers.dispatch.dispatch`).

        A partial, not a method that awaits it: no extra coroutine frame is
        kept alive per connection (an idle tunnel is waiting inside it).
        """
        self._matches = tuple(
            RouteMatch(route, index, backends=self.backends.get(index)) for index, route in enumerate(config.routes)
        )

    def match(self, request: Request) -> RouteMatch | None:
        """The route that takes ``request`` (see :class:`~wstrio._sansio.routing.Router`), or ``None``."""
        found = self.router.match(request)
        return None if found is None else self._matches[found[0]]

    async def decline(self, exchange: Exchange) -> None:
        """Answer a request the matched handler declines, as if no route had matched.

        That is the static files, as lighttpd's mod_staticfile answers what
        mod_cgi declines (a path that names no script).  It lets a handler
        fall through without importing another handler.
        """
        await _dispatch.serve_unrouted(exchange, self)
