"""The file-descriptor arithmetic (wstrio._sansio.resources)."""

from __future__ import annotations

from typing import Any

from tests.helpers import make_config
from wstrio._sansio.resources import SPARE_FDS, fds_needed

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
