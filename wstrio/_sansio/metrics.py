"""What a running server counts, and the Prometheus text exposition of it (sans-I/O).

Counting happens once per request, when it ends (at the same point as its
access-log line), never per frame: :meth:`Counters.finished` reads the
request's status and the fields its handler recorded (route, close codes,
bytes and messages each way).  Gauges (tunnels open, backends disabled,
processes running, file descriptors) are read when asked for.  A
:class:`ServerStatistics` is the one snapshot both
:meth:`wstrio.Server.statistics` and the metrics listener give;
:func:`exposition` writes it in the Prometheus text format 0.0.4.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Mapping
from typing import final

import attrs

from wstrio._config import Route

__all__ = [
    "CONTENT_TYPE",
    "NO_ROUTE",
    "BackendStatistics",
    "Counters",
    "RouteCounters",
    "RouteStatistics",
    "ServerStatistics",
    "exposition",
    "route_label",
]

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
"""The exposition's ``Content-Type``."""
NO_ROUTE = "-"
"""The ``route`` label of requests no route took (static files, 404, health checks)."""


@final
@attrs.define(eq=False)
class RouteCounters:
    """The counters of one route (by its ``path``), kept across reloads."""

    requests: collections.Counter[int] = attrs.Factory(collections.Counter)
    """Requests answered, by status (0: none was sent)."""
    tunnels: int = 0
    """WebSockets that ended (tunnels and upgrades passed through)."""
    refused: collections.Counter[int] = attrs.Factory(collections.Counter)
    """WebSocket handshakes answered with something else than the switch, by status."""
    closes_sent: collections.Counter[tuple[str, str]] = attrs.Factory(collections.Counter)
    """Ended WebSockets by (close code sent to the client, or ``none``; who ended it)."""
    closes_received: collections.Counter[int] = attrs.Factory(collections.Counter)
    """Close codes the clients sent (1005: a CLOSE without a code)."""
    bytes_from_client: int = 0
    bytes_to_client: int = 0
    messages_from_client: int = 0
    messages_to_client: int = 0


def route_label(route: Route) -> str:
    """The ``route`` label of a route: its ``path``, ``~regex`` or ``*.ext,*.ext``."""
    if route.path is not None:
        return route.path
    if route.regex is not None:
        return "~" + route.regex.pattern
    return ",".join("*" + e for e in route.extensions)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@final
class Counters:
    """A server's counters, shared by every configuration it has served."""

    def __init__(self) -> None:
        self.routes: dict[str, RouteCounters] = {}
        self.h2_streams_open = 0
        """HTTP/2 streams being answered now."""
        self.loop_lag: float | None = None
        """How late the event loop last woke a sleeping task, in seconds (``None``: not measured)."""

    def route(self, path: str) -> RouteCounters:
        counters = self.routes.get(path)
        if counters is None:
            counters = self.routes[path] = RouteCounters()
        return counters

    def finished(self, route: str | None, status: int | None, websocket: bool, fields: Mapping[str, object]) -> None:
        """Count one request that ended: its status, and for a WebSocket how it went."""
        counters = self.route(route if route is not None else NO_ROUTE)
        counters.requests[status or 0] += 1
        if "closed_by" in fields:  # a WebSocket ran (the handler recorded its end)
            counters.tunnels += 1
            code = fields.get("close_code")
            counters.closes_sent[(str(code) if isinstance(code, int) else "none", str(fields["closed_by"]))] += 1
            received = fields.get("close_code_received")
            if isinstance(received, int):
                counters.closes_received[received] += 1
            counters.bytes_from_client += _int(fields.get("bytes_from_client"))
            counters.bytes_to_client += _int(fields.get("bytes_to_client"))
            counters.messages_from_client += _int(fields.get("messages_from_client"))
            counters.messages_to_client += _int(fields.get("messages_to_client"))
        elif websocket and status not in (101, 200):
            counters.refused[status or 0] += 1


@final
@attrs.frozen
class BackendStatistics:
    """One backend host of a route, now."""

    name: str
    """Its label, socket path or host:port."""
    connections: int
    """Connections to it open now (its load)."""
    connected: int
    """Successful connects since the route was configured."""
    connect_failures: int
    """Failed connects since the route was configured."""
    disabled: bool
    """Disabled after a failed connect (``disable-time``)."""
    processes: int | None = None
    """A ``bin-path`` backend's processes running now (``None``: not spawned here)."""
    restarts: int | None = None
    """A ``bin-path`` backend's processes restarted after they exited."""


@final
@attrs.frozen
class RouteStatistics:
    """One route (by ``path``): its counters, and its backends now."""

    path: str
    """The route's ``path`` (:data:`NO_ROUTE` for requests no route took)."""
    tunnels_open: int
    """WebSockets open now on this route."""
    counters: RouteCounters
    """What ended so far (a copy)."""
    backends: tuple[BackendStatistics, ...] = ()


@final
@attrs.frozen
class ServerStatistics:
    """A snapshot of a running server's counters."""

    connections_active: int
    """Client connections open now."""
    connections_total: int
    """Client connections accepted since start."""
    buffered_bytes: int = 0
    """Bytes that backpressured tunnels and relays hold now: read from one side, waiting for the
    other to take them (what ``max-buffer-memory`` limits)."""
    buffered_peak: int = 0
    """The highest :attr:`buffered_bytes` since memory was last given back to the kernel."""
    tunnels_active: int = 0
    """WebSockets open now (tunnels and upgrades passed through), HTTP/1.1 and HTTP/2."""
    h2_streams_open: int = 0
    """HTTP/2 streams being answered now (a WebSocket over HTTP/2 is one)."""
    fds_open: int | None = None
    """File descriptors this process has open (``None``: unknown)."""
    fds_limit: int | None = None
    """The open-file limit (soft ``RLIMIT_NOFILE``)."""
    event_loop_lag: float | None = None
    """Seconds the event loop was late waking a task, last measured (``None``: no metrics listener)."""
    reloads: int = 0
    """Configuration reloads served."""
    routes: tuple[RouteStatistics, ...] = ()
    """Each route, in configuration order, then requests no route took."""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: object) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(str(value))}"' for key, value in labels.items()) + "}"


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


_Sample = tuple[Mapping[str, object], float]


def _family(name: str, kind: str, help_text: str, samples: list[_Sample]) -> Iterator[str]:
    yield f"# HELP {name} {help_text}"
    yield f"# TYPE {name} {kind}"
    for labels, value in samples:
        yield f"{name}{_labels(**labels)} {_number(value)}"


def exposition(stats: ServerStatistics) -> str:
    """``stats`` in the Prometheus text format (version 0.0.4)."""
    lines: list[str] = []

    def add(name: str, kind: str, help_text: str, samples: list[_Sample]) -> None:
        lines.extend(_family(name, kind, help_text, samples))

    def one(value: float | None) -> list[_Sample]:
        return [] if value is None else [({}, value)]

    add("wstrio_connections_open", "gauge", "Client connections open now.", one(stats.connections_active))
    add("wstrio_connections_total", "counter", "Client connections accepted.", one(stats.connections_total))
    add("wstrio_websockets_open", "gauge", "WebSockets open now, every route.", one(stats.tunnels_active))
    add("wstrio_http2_streams_open", "gauge", "HTTP/2 streams being answered now.", one(stats.h2_streams_open))
    add("wstrio_buffered_bytes", "gauge", "Bytes backpressured tunnels hold now.", one(stats.buffered_bytes))
    add("wstrio_open_fds", "gauge", "File descriptors open.", one(stats.fds_open))
    add("wstrio_max_fds", "gauge", "The open-file limit.", one(stats.fds_limit))
    add(
        "wstrio_event_loop_lag_seconds", "gauge", "How late the event loop last woke a task.", one(stats.event_loop_lag)
    )
    add("wstrio_reloads_total", "counter", "Configuration reloads served.", one(stats.reloads))

    routes = stats.routes

    def per_route(pick: str) -> list[_Sample]:
        return [({"route": r.path}, getattr(r.counters, pick)) for r in routes]

    add(
        "wstrio_http_requests_total",
        "counter",
        "Requests answered, by route and status (0: no response).",
        [({"route": r.path, "status": s}, n) for r in routes for s, n in sorted(r.counters.requests.items())],
    )
    add(
        "wstrio_tunnels_open",
        "gauge",
        "WebSockets open now, by route.",
        [({"route": r.path}, r.tunnels_open) for r in routes if r.path != NO_ROUTE],
    )
    add("wstrio_tunnels_total", "counter", "WebSockets that ended, by route.", per_route("tunnels"))
    add(
        "wstrio_handshakes_refused_total",
        "counter",
        "WebSocket handshakes refused, by route and status.",
        [({"route": r.path, "status": s}, n) for r in routes for s, n in sorted(r.counters.refused.items())],
    )
    add(
        "wstrio_close_codes_sent_total",
        "counter",
        "WebSockets ended, by the close code sent to the client (none: it could not be) and who ended it.",
        [
            ({"route": r.path, "code": code, "closed_by": by}, n)
            for r in routes
            for (code, by), n in sorted(r.counters.closes_sent.items())
        ],
    )
    add(
        "wstrio_close_codes_received_total",
        "counter",
        "Close codes clients sent, by route.",
        [({"route": r.path, "code": c}, n) for r in routes for c, n in sorted(r.counters.closes_received.items())],
    )
    add(
        "wstrio_tunnel_bytes_total",
        "counter",
        "Bytes WebSockets carried (ended ones), by route and direction.",
        [
            ({"route": r.path, "direction": d}, v)
            for r in routes
            for d, v in (("from_client", r.counters.bytes_from_client), ("to_client", r.counters.bytes_to_client))
        ],
    )
    add(
        "wstrio_tunnel_messages_total",
        "counter",
        "Messages wstunnel tunnels carried (ended ones), by route and direction.",
        [
            ({"route": r.path, "direction": d}, v)
            for r in routes
            for d, v in (
                ("from_client", r.counters.messages_from_client),
                ("to_client", r.counters.messages_to_client),
            )
        ],
    )
    backends = [(r.path, b) for r in routes for b in r.backends]
    add(
        "wstrio_backend_connections_open",
        "gauge",
        "Connections open to a backend now.",
        [({"route": p, "backend": b.name}, b.connections) for p, b in backends],
    )
    add(
        "wstrio_backend_connect_failures_total",
        "counter",
        "Failed connects to a backend.",
        [({"route": p, "backend": b.name}, b.connect_failures) for p, b in backends],
    )
    add(
        "wstrio_backend_disabled",
        "gauge",
        "1 while a backend is disabled after a failed connect.",
        [({"route": p, "backend": b.name}, int(b.disabled)) for p, b in backends],
    )
    add(
        "wstrio_backend_processes",
        "gauge",
        "Processes of a bin-path backend running now.",
        [({"route": p, "backend": b.name}, b.processes) for p, b in backends if b.processes is not None],
    )
    add(
        "wstrio_backend_restarts_total",
        "counter",
        "Processes of a bin-path backend restarted after they exited.",
        [({"route": p, "backend": b.name}, b.restarts) for p, b in backends if b.restarts is not None],
    )
    return "\n".join(lines) + "\n"
