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

from typing import TYPE_CHECKING

from wstrio._io.backends.route import BackendLease
from wstrio._io.handlers.cgi.common import ProgramChannel, send_request_head, serve_on_backend
from wstrio._io.http.exchange import Exchange
from wstrio._sansio.cgi.scgi import encode_request_headers

if TYPE_CHECKING:
    from wstrio._io.context import RouteMatch, ServerContext

__all__ = ["handle"]


async def _start_scgi(lease: BackendLease, environ: dict[str, str]) -> ProgramChannel:
    await send_request_head(lease, encode_request_headers(environ))
    return ProgramChannel(
        lease.stream,
        name=f"scgi {lease.address}",
        read_timeout=lease.backend.read_timeout,
        write_timeout=lease.backend.write_timeout,
    )


async def handle(exchange: Exchange, match: RouteMatch, ctx: ServerContext) -> None:
    """Answer one request on an ``scgi`` route.

    Args:
        exchange: the client's request and response.
        match: the scgi route that matched, with its backends.
        ctx: the server (settings, document root, dispatcher).

    Cancellation: the backend connection is closed and
    :class:`trio.Cancelled` propagates.

    Resource handling: the connection is closed before this returns.

    Error handling: as :func:`~wstrio._io.handlers.cgi.common.serve_on_backend`;
    only :class:`~wstrio._errors.ClientGone` propagates.
    """
    await serve_on_backend(exchange, match, ctx, _start_scgi)
