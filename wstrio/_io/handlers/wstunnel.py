"""The ``wstunnel`` handler: terminate the WebSocket, tunnel payloads to a backend.

Order, as lighttpd (reference section 2.3): validate the handshake (400/403,
:func:`wstrio._sansio.websocket.handshake.check_websocket`), connect to a backend
(503 when none can be reached), and only then send the 101 (HTTP/2: 200).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import trio

from wstrio._errors import BackendUnavailable, HandshakeRejected
from wstrio._io.http.exchange import Exchange, send_simple
from wstrio._io.route_tunnels import log_tunnel_end, route_codec, tunnel_settings
from wstrio._io.streams.tunnel import run_tunnel
from wstrio._sansio.websocket.handshake import accept_headers, check_websocket

if TYPE_CHECKING:
    from wstrio._io.context import RouteMatch, ServerContext

__all__ = ["handle", "tunnel_settings"]

log = logging.getLogger("wstrio.connection")


async def handle(exchange: Exchange, match: RouteMatch, ctx: ServerContext) -> None:
    """Answer a WebSocket handshake on a wstunnel route and run its tunnel.

    Error handling: a refused handshake gets its status (400, 403), no
    reachable backend 503; the tunnel's end is noted in the access log.
    Only :class:`~wstrio._errors.ClientGone` propagates.
    """
    request = exchange.request
    route, config = match.route, ctx.config
    try:
        accept = check_websocket(request, route)
    except HandshakeRejected as exc:
        log.info("%s %s: handshake refused (%d): %s", request.method, request.path, exc.status, exc)
        exchange.set_log_note(str(exc))
        await send_simple(exchange, exc.status, headers=exc.headers)
        return
    try:
        async with match.backends.connect(request) as lease:
            upgraded = await exchange.upgrade(accept_headers(accept, h2=request.h2))
            codec = route_codec(route, binary=accept.binary, leftover=upgraded.leftover)
            settings = tunnel_settings(config, route, lease.backend.read_timeout, lease.backend.write_timeout)
            started = trio.current_time()
            exchange.set_log_fields(backend=str(lease.address))
            try:
                outcome = await run_tunnel(
                    upgraded.stream, lease.stream, codec, settings, ctx.timers, ctx.hub, ctx.budget
                )
            except BaseException:
                # Cancelled (in an exception group) by the server's shutdown:
                # the client got CLOSE 1001 (run_tunnel); say so in the access log.
                if trio.current_effective_deadline() == -math.inf:
                    exchange.set_log_note(
                        f"tunnel to {lease.address} closed 1001 by shutdown after {trio.current_time() - started:.1f}s"
                    )
                    exchange.set_log_fields(
                        close_code=1001,
                        closed_by="shutdown",
                        messages_from_client=codec.messages_received,
                        messages_to_client=codec.messages_sent,
                    )
                raise
            log_tunnel_end(exchange, outcome, codec, f"tunnel to {lease.address}", started)
    except BackendUnavailable as exc:
        log.warning("%s: %s", request.path, exc)
        exchange.set_log_note(str(exc))
        if not exchange.response_started:
            await send_simple(exchange, exc.status)
