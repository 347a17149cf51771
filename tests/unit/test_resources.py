"""The file-descriptor arithmetic (wstrio._sansio.resources)."""

from __future__ import annotations

from typing import Any

from tests.helpers import make_config
from wstrio._sansio.resources import SPARE_FDS, AcceptBackoff, fds_needed

BACKEND = {"host": "127.0.0.1", "port": 9}


def _config(server: dict[str, Any], routes: list[dict[str, Any]]) -> Any:
    return make_config({"server": {"listen": ["127.0.0.1:0", "127.0.0.1:1"], **server}, "route": routes})


def test_static_only_needs_clients_and_listeners() -> None:
    config = _config({"max-connections": 100}, [])
    assert fds_needed(config) == 2 + 100 + SPARE_FDS


def test_http1_has_one_backend_per_connection() -> None:
    route = {"path": "/ws/", "handler": "wstunnel", "backend": [BACKEND]}
    config = _config({"max-connections": 100, "http2": False}, [route])
    assert fds_needed(config) == 2 + 100 + 100 + SPARE_FDS


def test_tunnels_are_bounded_by_max_tunnels_whatever_the_http_version() -> None:
    route = {"path": "/ws/", "handler": "wstunnel", "backend": [BACKEND]}
    config = _config({"max-connections": 100, "max-tunnels": 1000, "h2-max-concurrent-streams": 100}, [route])
    assert fds_needed(config) == 2 + 100 + 1000 + SPARE_FDS


def test_proxy_routes_add_a_backend_per_connection_for_plain_requests() -> None:
    route = {"path": "/p/", "handler": "proxy", "backend": [BACKEND]}
    config = _config({"max-connections": 100, "max-tunnels": 50}, [route])
    assert fds_needed(config) == 2 + 100 + 50 + 100 + SPARE_FDS


def test_spawned_processes_keep_a_socket_each() -> None:
    spawned = {"socket": "/tmp/x.sock", "bin-path": "/bin/cat", "min-procs": 1, "max-procs": 3}
    route = {"path": "/ws/", "handler": "wstunnel", "backend": [spawned]}
    config = _config({"max-connections": 10, "http2": False}, [route])
    assert fds_needed(config) == 2 + 10 + 10 + 3 + SPARE_FDS


def test_accept_backoff_doubles_to_a_ceiling_and_reports_one_episode() -> None:
    backoff = AcceptBackoff()
    assert backoff.succeeded(0.0) is None
    delays = []
    firsts = []
    now = 10.0
    for _ in range(10):
        delay, first = backoff.failed(now)
        delays.append(delay)
        firsts.append(first)
        now += delay
    assert firsts == [True] + [False] * 9
    assert delays[:4] == [
        AcceptBackoff.FIRST,
        2 * AcceptBackoff.FIRST,
        4 * AcceptBackoff.FIRST,
        8 * AcceptBackoff.FIRST,
    ]
    assert max(delays) == AcceptBackoff.LONGEST
    assert delays == sorted(delays)
    assert backoff.in_episode
    assert backoff.succeeded(now) == (now - 10.0, 10)
    assert not backoff.in_episode
    assert backoff.succeeded(now) is None


def test_a_new_episode_starts_again_from_the_first_delay() -> None:
    backoff = AcceptBackoff()
    for t in range(5):
        backoff.failed(float(t))
    backoff.succeeded(5.0)
    assert backoff.failed(6.0) == (AcceptBackoff.FIRST, True)
