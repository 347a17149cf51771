"""What every connection of one configuration shares: the server context.

:class:`ServerContext` is built once per configuration (by :func:`wstrio.serve`
and friends, by :meth:`wstrio.Server.reload`, or by a test) and handed to
every handler with the request's :class:`RouteMatch`.  What outlives a
reload (the timers, the hub, the reaper, the keeper, the buffer budget and
the count of open tunnels) is in :class:`Services`, which a reloaded
context shares with the one before; a route equal to an old one keeps its
backends and :class:`RouteState`.  A context holds:

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
from wstrio._io.backends.pool import SpawnedPool
from wstrio._io.backends.route import RouteBackends
from wstrio._io.handlers import dispatch as _dispatch
from wstrio._io.http.exchange import Exchange
from wstrio._io.keeper import Keeper
from wstrio._io.reaper import Reaper
from wstrio._io.streams.budget import BufferBudget
from wstrio._io.streams.fastpath.hub import Hub
from wstrio._io.streams.timers import TimerService
from wstrio._sansio.http.request import Request
from wstrio._sansio.limits import ConnectionCounter, RateLimiter
from wstrio._sansio.metrics import Counters, route_label
from wstrio._sansio.routing import Router

__all__ = ["RouteMatch", "RouteState", "ServerContext", "Services"]


@final
@attrs.define(eq=False)
class RouteState:
    """What one route counts while it runs; a reload that keeps the route keeps it too."""

    per_ip: ConnectionCounter | None
    """Route ``max-connections-per-ip``: requests (and tunnels) in progress per address."""
    tunnels: int = 0
    """WebSockets open now on this route (route ``max-tunnels``)."""
    processes: int = 0
    """Programs running now for this ``process`` route (``max-processes``)."""


@final
@attrs.frozen
class RouteMatch:
    """The route that takes a request, with what the server keeps for it."""

    route: Route
    """The matching route."""
    index: int
    """Its position in ``config.routes``."""
    _backends: RouteBackends | None
    state: RouteState
    """Its counters (open tunnels, requests per address)."""
    label: str = ""
    """Its ``route`` label in the metrics (its path; ``path#index`` for a second route with that path)."""

    @property
    def has_backends(self) -> bool:
        """Whether the route has backends (every handler but ``cgi``)."""
        return self._backends is not None

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
class Services:
    """What every configuration of one server shares: a reload keeps all of it."""

    def __init__(self, config: ServerConfig) -> None:
        self.timers = TimerService()
        self.hub = Hub()
        self.reaper = Reaper()
        """Finishes CGI scripts that outlive their answer, in the background."""
        self.budget = BufferBudget(config.max_buffer_memory)
        """What backpressured tunnels and relays hold, server-wide (``max-buffer-memory``)."""
        self.keeper = Keeper()
        """Kills the process groups this server started if it dies without stopping them."""
        self.tunnels = 0
        """WebSockets open now (``server.max-tunnels``), over HTTP/1.1 and HTTP/2."""
        self.counters = Counters()
        """What ended so far, per route (the metrics)."""


@final
class ServerContext:
    """What every connection of one server shares: config, routes, backends, timers, hub.

    Args:
        config: the server configuration.
        connector: how backends are reached.
        spawn: start ``bin-path`` backends here (``False`` in a worker
            process: the supervisor runs them).
        previous: the context of the configuration this one replaces (a
            reload).  The new one shares its services (timers, hub, keeper,
            buffer budget, open-tunnel count); a route equal to one of the
            old ones keeps its backends and counters, and a ``bin-path``
            backend equal to an old one keeps its running pool.
    """

    def __init__(
        self,
        config: ServerConfig,
        connector: BackendConnector,
        *,
        spawn: bool = True,
        previous: ServerContext | None = None,
    ) -> None:
        self.config = config
        self.router = Router(config.routes)
        self.services: Services = previous.services if previous is not None else Services(config)
        services = self.services
        self.real_root = os.path.realpath(config.document_root) if config.document_root is not None else None
        """The document root, symbolic links resolved (``None``: no static files)."""
        old = previous.config if previous is not None else None
        if previous is not None and old is not None and old.max_connections_per_ip == config.max_connections_per_ip:
            self.connections_per_ip: ConnectionCounter = previous.connections_per_ip
        else:
            self.connections_per_ip = ConnectionCounter(config.max_connections_per_ip)
        """``server.max-connections-per-ip``: client connections per address (taken by the server's accept side)."""
        if (
            previous is not None
            and old is not None
            and (old.request_rate, old.effective_request_burst)
            == (
                config.request_rate,
                config.effective_request_burst,
            )
        ):
            self.request_rate: RateLimiter = previous.request_rate
        else:
            self.request_rate = RateLimiter(config.request_rate, config.effective_request_burst)
        """``request-rate``/``request-burst``: a token bucket per address, taken per request."""
        self.timers = services.timers
        self.hub = services.hub
        self.reaper = services.reaper
        self.budget = services.budget
        self.keeper = services.keeper
        self.backends: dict[int, RouteBackends] = {}
        """The backends of every route that has some, by route index (the server starts them)."""
        matches: list[RouteMatch] = []
        kept_routes: list[int] = []  # indexes of the previous routes already taken
        running = previous.spawned_pools() if previous is not None else []
        for index, route in enumerate(config.routes):
            same = None
            if previous is not None:
                same = next((m for m in previous._matches if m.route == route and m.index not in kept_routes), None)
            if same is not None:
                kept_routes.append(same.index)
                backends = same._backends
                state = same.state
                for pool in backends.spawned_pools if backends is not None else ():
                    running.remove(pool)
            else:
                backends = None
                if route.backends:
                    backends = RouteBackends(route, connector, spawn=spawn, running=running)
                    for pool in backends.spawned_pools:
                        if pool in running:
                            running.remove(pool)
                per_ip = ConnectionCounter(route.max_connections_per_ip) if route.max_connections_per_ip else None
                state = RouteState(per_ip)
            if backends is not None:
                self.backends[index] = backends
            label = route_label(route)
            if any(
                m.label == label for m in matches
            ):  # the second route with a path never matches what the first takes
                label = f"{label}#{index}"
            matches.append(RouteMatch(route, index, backends=backends, state=state, label=label))
        self._matches: tuple[RouteMatch, ...] = tuple(matches)
        self.removed_pools = running
        """The pools of the previous configuration that this one does not use (a reload drains them)."""
        self.kept_routes = len(kept_routes)
        """How many routes were taken over unchanged from the previous configuration."""
        self.starts_programs = any(r.handler in ("cgi", "process") for r in config.routes) or (
            spawn and any(b.spawned for r in config.routes for b in r.backends)
        )
        """Whether this server starts processes (CGI scripts, ``bin-path`` pools): then the keeper runs."""
        self.dispatch: Callable[[Exchange], Awaitable[None]] = functools.partial(_dispatch.dispatch, ctx=self)
        """Answer one request (:func:`wstrio._io.handlers.dispatch.dispatch`).

        A partial, not a method that awaits it: no extra coroutine frame is
        kept alive per connection (an idle tunnel is waiting inside it).
        """

    @property
    def tunnels(self) -> int:
        """WebSockets open now (``server.max-tunnels``), over HTTP/1.1 and HTTP/2, every configuration."""
        return self.services.tunnels

    @tunnels.setter
    def tunnels(self, value: int) -> None:
        self.services.tunnels = value

    @property
    def matches(self) -> tuple[RouteMatch, ...]:
        """Every route with what the server keeps for it, by route index."""
        return self._matches

    def spawned_pools(self) -> list[SpawnedPool]:
        """Every ``bin-path`` pool this configuration runs."""
        return [pool for backends in self.backends.values() for pool in backends.spawned_pools]

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
