"""Which route takes a request.

Routes are tried in file order and the first that matches wins, as in
lighttpd.  A ``wstunnel`` (or ``process``) route only takes WebSocket handshakes: any other
request on its path falls through to later routes and then to the static
files, exactly as mod_wstunnel declines non-upgrade requests.  ``proxy``,
``cgi``, ``scgi`` and ``fastcgi`` routes take every request that matches.

Never imports trio.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import final

from wstrio._config import Route
from wstrio._sansio.http.request import Request

__all__ = ["Router", "route_matches_path"]


def route_matches_path(route: Route, path: str) -> bool:
    """True if ``route``'s path rule (prefix, regex or extensions) matches ``path``."""
    if route.path is not None:
        return path.startswith(route.path)
    if route.regex is not None:
        return route.regex.search(path) is not None
    return any(path.endswith(ext) for ext in route.extensions)


@final
class Router:
    """Matches requests against an ordered list of routes."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)

    def match(self, request: Request) -> tuple[int, Route] | None:
        """The first route that takes ``request`` and its index in the routes, or ``None`` (static files).

        The index names the route's state kept elsewhere (its backends, in
        the I/O layer), without a lookup by identity.
        """
        for index, route in enumerate(self.routes):
            if route.handler in ("wstunnel", "process") and not request.websocket:
                continue
            if route_matches_path(route, request.path):
                return index, route
        return None

    def websocket_route(self, request: Request) -> Route | None:
        """The first ``wstunnel`` route whose path matches ``request``, whatever its headers.

        For the static files' answer to a plain request on a WebSocket
        endpoint: 426 Upgrade Required, which says what to do, instead of 404.
        """
        for route in self.routes:
            if route.handler in ("wstunnel", "process") and route_matches_path(route, request.path):
                return route
        return None
