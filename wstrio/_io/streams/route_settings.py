"""A route's tunnel settings: its timers and its message framing (wstunnel and process routes)."""

from __future__ import annotations

from wstrio._config import Route, ServerConfig
from wstrio._io.streams.tunnel import TunnelSettings
from wstrio._sansio.websocket.framing import DEFAULT_MAX_MESSAGE, Framing

__all__ = ["framing_of", "tunnel_settings"]


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
