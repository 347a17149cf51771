"""The ``scgi`` handler: the request goes to an SCGI backend.

An SCGI request is the environment as a netstring
(:func:`~wstrio._sansio.cgi.scgi.encode_request_headers`: ``CONTENT_LENGTH``
first, ``SCGI=1``) followed by the raw body; the answer is a CGI response on
the same connection, ended by the backend closing it.  After a ``Status:
101`` the connection carries raw bytes both ways (lighttpd, reference
section 7), and a client EOF becomes ``shutdown(SHUT_WR)``.  The request
side is never half-closed otherwise: the body's length is in the header,
and some SCGI servers take an early EOF for an aborted request.

Everything else (``check-local``, the exchange, upgrades, errors) is shared
with FastCGI and CGI in :mod:`wstrio._io.handlers.cgi.common`.
"""

from __future__ import annotations

from wstrio._config import Route, ServerConfig
from wstrio._io.backends.pool import BackendLease, RouteBackends
from wstrio._io.handlers.cgi.common import GatewayChannel, send_request_head, serve_backend_gateway
from wstrio._io.http.exchange import Dispatch, Exchange
from wstrio._sansio.cgi.scgi import encode_request_headers

__all__ = ["handle_scgi"]


async def _start_scgi(lease: BackendLease, environ: dict[str, str]) -> GatewayChannel:
    await send_request_head(lease, encode_request_headers(environ))
    return GatewayChannel(
        lease.stream,
        name=f"scgi {lease.address}",
        read_timeout=lease.backend.read_timeout,
        write_timeout=lease.backend.write_timeout,
    )


async def handle_scgi(
    exchange: Exchange,
    route: Route,
    backends: RouteBackends,
    config: ServerConfig,
    real_root: str | None,
    dispatch: Dispatch,
) -> None:
    """Answer one request on an ``scgi`` route.

    Args:
        exchange: the client's request and response.
        route: the scgi route that matched.
        backends: the route's backends.
        config: server settings.
        real_root: the document root, symbolic links resolved (or ``None``).
        dispatch: answers a request from scratch (for local redirects).

    Cancellation: the backend connection is closed and
    :class:`trio.Cancelled` propagates.

    Resource handling: the connection is closed before this returns.

    Error handling: as :func:`~wstrio._io.handlers.cgi.common.serve_backend_gateway`;
    only :class:`~wstrio._io.http.exchange.ClientGone` propagates.
    """
    await serve_backend_gateway(exchange, route, backends, config, real_root, dispatch, _start_scgi)
