"""A route's tunnels: their timers, message framing and codec, and how their end is logged (wstunnel and process)."""

from __future__ import annotations

import trio

from wstrio._config import Route, ServerConfig
from wstrio._io.http.exchange import Exchange
from wstrio._io.streams.tunnel import Outcome, TunnelSettings
from wstrio._sansio.websocket.codec import WebSocketCodec
from wstrio._sansio.websocket.framing import DEFAULT_MAX_MESSAGE, Framing

__all__ = ["framing_of", "log_tunnel_end", "route_codec", "tunnel_settings"]


def framing_of(route: Route) -> Framing | None:
    """The route's message framing (``None``: ``stream``)."""
    kind = route.effective_framing
    if kind == "stream":
        return None
    return Framing(
        kind,
        length_bytes=route.length_bytes,
        max_message_size=route.max_message_size or DEFAULT_MAX_MESSAGE,
        flush_timeout=route.flush_timeout,
    )


def tunnel_settings(config: ServerConfig, route: Route, backend_read: float, backend_write: float) -> TunnelSettings:
    """The timers of a tunnel on ``route``."""
    return TunnelSettings(
        max_read_idle=config.max_read_idle,
        max_write_idle=config.max_write_idle,
        ping_interval=route.ping_interval,
        pong_timeout=route.effective_pong_timeout,
        backend_read_timeout=backend_read,
        backend_write_timeout=backend_write,
        shutdown_timeout=config.shutdown_timeout,
        max_lifetime=config.tunnel_lifetime(route),
        framing=framing_of(route),
    )


def route_codec(route: Route, *, binary: bool, leftover: bytes) -> WebSocketCodec:
    """The WebSocket codec of a tunnel on ``route``.

    With a framing other than ``stream`` client messages are held until
    complete, so their size is always bounded: ``max-message-size``, or
    1 MiB when it is 0.
    """
    framing = framing_of(route)
    limit = route.max_message_size or (DEFAULT_MAX_MESSAGE if framing is not None else 0)
    return WebSocketCodec(
        binary=binary,
        leftover=leftover,
        max_frame_size=route.max_frame_size,
        max_message_size=limit,
        encode_message=framing.encode if framing is not None else None,
    )


def log_tunnel_end(exchange: Exchange, outcome: Outcome, codec: WebSocketCodec, what: str, started: float) -> None:
    """The access log's record of how a tunnel ended: its fields, and the note ``WHAT closed CODE by WHO ...``."""
    exchange.set_log_fields(
        close_code=outcome.code,
        close_code_received=outcome.received_code,
        closed_by=outcome.by,
        close_reason=outcome.reason or None,
        bytes_from_client=outcome.bytes_from_client,
        bytes_to_client=outcome.bytes_to_client,
        messages_from_client=codec.messages_received,
        messages_to_client=codec.messages_sent,
    )
    exchange.set_log_note(
        f"{what} closed {outcome.code if outcome.code is not None else '-'}"
        f" by {outcome.by}{': ' + outcome.reason if outcome.reason else ''}"
        f" after {trio.current_time() - started:.1f}s"
    )
