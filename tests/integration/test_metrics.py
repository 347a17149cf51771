"""The metrics listener (``[server.metrics]``): real tunnels counted, read back with prometheus_client's parser."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import wstrio
from tests.helpers import (
    OP_TEXT,
    PID_TAGGING_BACKEND,
    RawClient,
    RawClients,
    client_close_frame,
    client_frame,
    echo_route,
    serve_echo_tcp,
    start_cli_server,
    start_server,
    unused_tcp_port,
    write_python_backend,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(server: wstrio.Server, path: str = "/metrics", method: str = "GET") -> tuple[int, bytes, bytes]:
    """(status, content-type, body) of one request to the metrics listener."""
    address = server.metrics_address
    assert address is not None
    client = await RawClient.tcp(address.port)
    try:
        response = await client.request(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), method)
    finally:
        await client.aclose()
    return response.status, response.header(b"content-type") or b"", response.body


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(found: Samples, name: str, **labels: Any) -> float:
    return found[(name, frozenset((k, str(v)) for k, v in labels.items()))]


async def test_the_exposition_counts_tunnels_refusals_and_backends(
    nursery: trio.Nursery, raw: RawClients, tmp_path: Path
) -> None:
    echo = await serve_echo_tcp(nursery)
    dead = unused_tcp_port()
    program = write_python_backend(tmp_path / "tag.py", PID_TAGGING_BACKEND)
    config = {
        "server": {"shutdown-timeout": 0.25, "metrics": {"listen": "127.0.0.1:0"}},
        "route": [
            echo_route(echo),
            echo_route(dead, "/dead/"),
            {
                "path": "/spawned/",
                "handler": "wstunnel",
                "backend": [{"socket": str(tmp_path / "s.sock"), "bin-path": str(program), "max-procs": 1}],
            },
        ],
    }
    server = await start_server(nursery, config)
    port = server.port

    # Two tunnels that end: two messages each way on each, closed by the client with 1000 and 4001.
    for code in (1000, 4001):
        client = await raw.tcp(port)
        assert (await client.ws_handshake("/ws/")).status == 101
        for text in (b"hello", b"world!"):
            await client.send(client_frame(OP_TEXT, text))
            got = b""
            while len(got) < len(text):
                got += (await client.read_frame()).payload
        await client.send(client_close_frame(code))
        await client.read_frames_until_close(reply=False)
        await client.aclose()
    # One left open.
    still_open = await raw.tcp(port)
    assert (await still_open.ws_handshake("/ws/")).status == 101
    # A backend that refuses: 503 to the handshake, a connect failure, the host disabled.
    refused = await raw.tcp(port)
    assert (await refused.ws_handshake("/dead/")).status == 503
    # No route: 404.
    plain = await raw.tcp(port)
    assert (await plain.request(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")).status == 404
    # The counters are written when a request ends: wait until the two tunnels are in.
    with trio.fail_after(10):
        while server.statistics().tunnels_active != 1:  # noqa: ASYNC110 - a counter, not an event
            await trio.sleep(0.01)

    status, content_type, body = await scrape(server)
    assert status == 200
    assert content_type == b"text/plain; version=0.0.4; charset=utf-8"
    found = samples(body.decode())
    assert value(found, "wstrio_tunnels_total", route="/ws/") == 2
    assert value(found, "wstrio_tunnels_open", route="/ws/") == 1
    assert value(found, "wstrio_websockets_open") == 1
    assert value(found, "wstrio_close_codes_received_total", route="/ws/", code=1000) == 1
    assert value(found, "wstrio_close_codes_received_total", route="/ws/", code=4001) == 1
    assert value(found, "wstrio_close_codes_sent_total", route="/ws/", code=1000, closed_by="client") == 2
    assert value(found, "wstrio_tunnel_messages_total", route="/ws/", direction="from_client") == 4
    assert value(found, "wstrio_tunnel_messages_total", route="/ws/", direction="to_client") == 4
    assert value(found, "wstrio_tunnel_bytes_total", route="/ws/", direction="from_client") == 2 * 11
    # To the client: the four echoed frames (2-byte headers) and the two CLOSE replies (2 + 2 bytes).
    assert value(found, "wstrio_tunnel_bytes_total", route="/ws/", direction="to_client") == 2 * (7 + 8) + 2 * 4
    assert value(found, "wstrio_http_requests_total", route="/ws/", status=101) == 2
    assert value(found, "wstrio_handshakes_refused_total", route="/dead/", status=503) == 1
    assert value(found, "wstrio_http_requests_total", route="-", status=404) == 1
    dead_backend = f"127.0.0.1:{dead}"
    assert value(found, "wstrio_backend_connect_failures_total", route="/dead/", backend=dead_backend) >= 1
    assert value(found, "wstrio_backend_disabled", route="/dead/", backend=dead_backend) == 1
    assert value(found, "wstrio_backend_disabled", route="/ws/", backend=f"127.0.0.1:{echo}") == 0
    assert value(found, "wstrio_backend_connections_open", route="/ws/", backend=f"127.0.0.1:{echo}") == 1
    spawned = f"unix:{tmp_path / 's.sock'}"
    assert value(found, "wstrio_backend_processes", route="/spawned/", backend=spawned) == 1
    assert value(found, "wstrio_backend_restarts_total", route="/spawned/", backend=spawned) == 0
    assert value(found, "wstrio_connections_total") >= 5
    assert value(found, "wstrio_open_fds") > 0
    assert value(found, "wstrio_max_fds") > 0
    assert value(found, "wstrio_reloads_total") == 0

    # Server.statistics() gives the same figures.
    stats = server.statistics()
    ws = next(r for r in stats.routes if r.path == "/ws/")
    assert (ws.tunnels_open, ws.counters.tunnels, ws.counters.messages_from_client) == (1, 2, 4)
    assert dict(ws.counters.closes_received) == {1000: 1, 4001: 1}
    dead_route = next(r for r in stats.routes if r.path == "/dead/")
    assert dead_route.backends[0].disabled
    assert dict(dead_route.counters.refused) == {503: 1}


async def test_metrics_listener_answers_only_its_path(nursery: trio.Nursery) -> None:
    config = {"server": {"metrics": {"listen": "127.0.0.1:0", "path": "/m"}}, "route": [echo_route(1)]}
    server = await start_server(nursery, config)
    assert (await scrape(server, "/m"))[0] == 200
    status, _, body = await scrape(server, "/metrics")
    assert status == 404
    assert b"the metrics are at /m" in body
    assert (await scrape(server, "/m", "POST"))[0] == 405
    status, _, body = await scrape(server, "/m", "HEAD")
    assert (status, body) == (200, b"")
    # Not on the public listener.
    client = await RawClient.tcp(server.port)
    try:
        assert (await client.request(b"GET /m HTTP/1.1\r\nHost: x\r\n\r\n")).status == 404
    finally:
        await client.aclose()


async def test_the_event_loop_lag_is_measured(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    server = await start_server(nursery, {"server": {"metrics": {"listen": "127.0.0.1:0"}}, "route": [echo_route(1)]})
    assert server.statistics().event_loop_lag is None
    await trio.sleep(1.5)
    assert server.statistics().event_loop_lag == 0.0  # the virtual clock is never late


@pytest.mark.parametrize(
    ("metrics", "problem"),
    [
        ({"listen": ["127.0.0.1:1", "127.0.0.1:2"]}, "server.metrics.listen: must be one address"),
        ({"path": "/metrics"}, "server.metrics.listen"),
        ({"listen": "127.0.0.1:9108", "path": "metrics"}, "server.metrics.path: must start with '/'"),
        ({"listen": "127.0.0.1:9108", "port": 1}, "server.metrics.port: unknown key"),
    ],
)
def test_metrics_config_problems_name_the_key(metrics: dict[str, Any], problem: str) -> None:
    with pytest.raises(wstrio.ConfigError, match=problem.replace(".", r"\.").replace("'", "'")):
        wstrio.config_from_mapping({"server": {"listen": ["127.0.0.1:0"], "metrics": metrics}})


@pytest.mark.slow
async def test_with_workers_each_worker_has_its_own_metrics_listener(nursery: trio.Nursery, tmp_path: Path) -> None:
    echo = await serve_echo_tcp(nursery)
    config = tmp_path / "wstrio.toml"
    config.write_text(
        "[server]\nlisten = ['127.0.0.1:0']\nworkers = 2\nshutdown-timeout = 1\n"
        "[server.metrics]\nlisten = '127.0.0.1:0'\n"
        f"[[route]]\npath = '/ws/'\nhandler = 'wstunnel'\n[[route.backend]]\nhost = '127.0.0.1'\nport = {echo}\n"
    )
    cli = await start_cli_server(nursery, config)
    ports: list[int] = []
    with trio.fail_after(30):
        while len(ports) < 2:
            ports = [
                int(m) for line in cli.stderr for m in re.findall(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", line)
            ]
            await trio.sleep(0.05)
    assert len(set(ports)) == 2
    for port in ports:
        client = await RawClient.tcp(port)
        try:
            response = await client.request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        finally:
            await client.aclose()
        assert response.status == 200
        assert "wstrio_connections" in {f.name for f in text_string_to_metric_families(response.body.decode())}
    assert await cli.stop() == 0
