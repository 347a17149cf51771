"""The Prometheus text exposition (sans-I/O), read back by prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from wstrio._sansio.metrics import (
    NO_ROUTE,
    BackendStatistics,
    Counters,
    RouteStatistics,
    ServerStatistics,
    exposition,
)


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_label_values_are_escaped_and_read_back() -> None:
    counters = Counters()
    odd = 'a "quoted"\\path\nwith a newline'
    counters.finished(odd, 101, True, {"closed_by": "backend", "close_code": 1001, "bytes_to_client": 9})
    route = RouteStatistics(odd, 2, counters.route(odd), (BackendStatistics('b"1', 3, 4, 5, True, 2, 1),))
    found = parse(exposition(ServerStatistics(connections_active=1, connections_total=7, routes=(route,))))
    assert found[("wstrio_tunnels_open", frozenset({("route", odd)}))] == 2
    assert found[("wstrio_tunnels_total", frozenset({("route", odd)}))] == 1
    key = frozenset({("route", odd), ("code", "1001"), ("closed_by", "backend")})
    assert found[("wstrio_close_codes_sent_total", key)] == 1
    backend = frozenset({("route", odd), ("backend", 'b"1')})
    assert found[("wstrio_backend_disabled", backend)] == 1
    assert found[("wstrio_backend_connect_failures_total", backend)] == 5
    assert found[("wstrio_backend_processes", backend)] == 2
    assert found[("wstrio_connections_total", frozenset())] == 7


def test_counting_tells_tunnels_refusals_and_plain_requests_apart() -> None:
    counters = Counters()
    counters.finished("/ws/", 101, True, {"closed_by": "client", "close_code": 1000, "close_code_received": 1000})
    counters.finished("/ws/", 200, True, {"closed_by": "client", "close_code": None})  # HTTP/2, no CLOSE sent
    counters.finished("/ws/", 403, True, {})
    counters.finished("/ws/", 426, False, {})
    counters.finished(None, None, False, {})
    ws = counters.route("/ws/")
    assert ws.tunnels == 2
    assert dict(ws.refused) == {403: 1}
    assert dict(ws.requests) == {101: 1, 200: 1, 403: 1, 426: 1}
    assert dict(ws.closes_sent) == {("1000", "client"): 1, ("none", "client"): 1}
    assert dict(ws.closes_received) == {1000: 1}
    assert dict(counters.route(NO_ROUTE).requests) == {0: 1}


def test_unknown_gauges_are_left_out() -> None:
    text = exposition(ServerStatistics(connections_active=0, connections_total=0))
    found = parse(text)
    assert ("wstrio_open_fds", frozenset()) not in found
    assert ("wstrio_event_loop_lag_seconds", frozenset()) not in found
    assert "# TYPE wstrio_open_fds gauge" in text
