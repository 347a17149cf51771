"""The metrics listener (``[server.metrics]``) and the snapshot behind it.

:func:`server_statistics` reads a running server into one
:class:`~wstrio._sansio.metrics.ServerStatistics`: the counters of what
ended (:class:`~wstrio._sansio.metrics.Counters`, counted once per request
by the dispatcher) and the gauges read now (tunnels open per route,
backends' load, disabled hosts, processes, file descriptors).
:func:`serve_metrics` answers ``GET /metrics`` with it in the Prometheus
text format on its own listener, apart from the public ones, and measures
the event loop's lag while it runs.
"""

from __future__ import annotations

import logging
import os
import resource
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
import h11
import trio

from wstrio._io.streams.pipes import close_stream
from wstrio._sansio.metrics import (
    CONTENT_TYPE,
    BackendStatistics,
    Counters,
    RouteCounters,
    RouteStatistics,
    ServerStatistics,
    exposition,
)

if TYPE_CHECKING:
    from wstrio._config import MetricsConfig
    from wstrio._io.context import ServerContext

__all__ = ["LAG_EVERY", "serve_metrics", "server_statistics"]

log = logging.getLogger("wstrio.server")

LAG_EVERY = 1.0
"""Seconds between two measurements of the event loop's lag."""


def _copy(counters: RouteCounters) -> RouteCounters:
    return attrs.evolve(
        counters,
        requests=counters.requests.copy(),
        refused=counters.refused.copy(),
        closes_sent=counters.closes_sent.copy(),
        closes_received=counters.closes_received.copy(),
    )


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # (the one listdir opened)
    except OSError:
        return None


def server_statistics(context: ServerContext, active: int, total: int, reloads: int) -> ServerStatistics:
    """The snapshot of a server whose current configuration is ``context``."""
    services = context.services
    counters = services.counters
    now = trio.current_time()
    routes = []
    seen: set[str] = set()
    for match in context.matches:
        label = match.label
        backends = []
        if match.has_backends:
            route_backends = match.backends
            hosts = route_backends.balancer.statistics(now)
            for backend, host, pool in zip(match.route.backends, hosts, route_backends.pools, strict=True):
                backends.append(
                    BackendStatistics(
                        name=backend.name,
                        connections=host.load,
                        connected=host.connected,
                        connect_failures=host.failures,
                        disabled=host.disabled,
                        processes=pool.running if pool is not None else None,
                        restarts=pool.restarts if pool is not None else None,
                    )
                )
        seen.add(label)
        routes.append(RouteStatistics(label, match.state.tunnels, _copy(counters.route(label)), tuple(backends)))
    for label, route_counters in counters.routes.items():
        if label not in seen:  # requests no route took, and routes a reload removed
            routes.append(RouteStatistics(label, 0, _copy(route_counters)))
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return ServerStatistics(
        connections_active=active,
        connections_total=total,
        buffered_bytes=services.budget.held,
        buffered_peak=services.budget.peak,
        tunnels_active=services.tunnels,
        h2_streams_open=counters.h2_streams_open,
        fds_open=_open_fds(),
        fds_limit=None if limit == resource.RLIM_INFINITY else limit,
        event_loop_lag=counters.loop_lag,
        reloads=reloads,
        routes=tuple(routes),
    )


_REQUEST_TIME = 10.0
"""Seconds a metrics client has to send its request and take the answer."""


def _response(status: int, reason: str, body: bytes, content_type: bytes = b"text/plain; charset=utf-8") -> bytes:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.next_event()
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (b"cache-control", b"no-store"),
    ]
    head = conn.send(h11.Response(status_code=status, reason=reason.encode(), headers=headers)) or b""
    return head + body


async def _answer(
    stream: trio.abc.Stream, metrics: MetricsConfig, snapshot: Callable[[], ServerStatistics]
) -> bytes | None:
    """Read one request; the whole response to it (``None``: the client left)."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16384)
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return _response(400, "Bad Request", b"400 Bad Request\n")
        if event is h11.NEED_DATA:
            data = await stream.receive_some(16384)
            if not data:
                return None
            conn.receive_data(bytes(data))
            continue
        if not isinstance(event, h11.Request):
            return None
        path = event.target.split(b"?", 1)[0].decode("latin-1")
        if path != metrics.path:
            return _response(404, "Not Found", f"404 Not Found: the metrics are at {metrics.path}\n".encode())
        if event.method not in (b"GET", b"HEAD"):
            return _response(405, "Method Not Allowed", b"405 Method Not Allowed: GET or HEAD\n")
        body = exposition(snapshot()).encode()
        response = _response(200, "OK", body, CONTENT_TYPE)
        return response[: len(response) - len(body)] if event.method == b"HEAD" else response


async def _measure_lag(counters: Counters) -> None:
    """Every :data:`LAG_EVERY` s: how late a sleep woke (a busy loop wakes its tasks late)."""
    while True:
        asked = trio.current_time() + LAG_EVERY
        await trio.sleep_until(asked)
        counters.loop_lag = max(0.0, trio.current_time() - asked)


async def serve_metrics(
    listener: trio.abc.Listener[trio.abc.Stream],
    metrics: MetricsConfig,
    snapshot: Callable[[], ServerStatistics],
    counters: Counters,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer ``GET <path>`` on ``listener`` with ``snapshot()`` as Prometheus text, until cancelled."""

    async def connection(stream: trio.abc.Stream) -> None:
        # One request per connection (Connection: close), not access-logged:
        # a scrape every 15 s would fill the access log.
        try:
            with trio.move_on_after(_REQUEST_TIME):
                response = await _answer(stream, metrics, snapshot)
                if response:
                    await stream.send_all(response)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            log.exception("metrics connection failed")
        finally:
            await close_stream(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_measure_lag, counters)
        task_status.started()
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:  # out of descriptors: the public side logs it; wait
                    log.debug("metrics listener: accept failed: %s", exc)
                    await trio.sleep(0.1)
                    continue
                nursery.start_soon(connection, stream)
