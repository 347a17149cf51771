"""Configs built in Python get the same value checks as configs loaded from TOML."""

from __future__ import annotations

import re
from typing import Any

import attrs
import pytest

from wstrio import Backend, ConfigError, ListenAddress, Route, ServerConfig, config_from_mapping

TCP = (ListenAddress("tcp", "127.0.0.1", 0),)


def wstunnel(**route: Any) -> Route:
    route.setdefault("backends", (Backend(host="127.0.0.1", port=9),))
    route.setdefault("path", "/ws/")
    return Route(handler="wstunnel", **route)


# (what to build in Python, the same thing as a mapping, the key path, a fragment of the message)
CASES: list[tuple[dict[str, Any], dict[str, Any], str, str]] = [
    (
        {"routes": (wstunnel(path="ws/"),)},
        {"route": [{"path": "ws/", "handler": "wstunnel", "backend": [{"host": "127.0.0.1", "port": 9}]}]},
        "route[0].path",
        "must start with '/'",
    ),
    (
        {"routes": (wstunnel(backends=(Backend(host="127.0.0.1", port=70000),)),)},
        {"route": [{"path": "/ws/", "handler": "wstunnel", "backend": [{"host": "127.0.0.1", "port": 70000}]}]},
        "route[0].backend[0].port",
        "65535",
    ),
    (
        {"routes": (Route(handler="proxy", path="/", origins=("x.com",), backends=(Backend(host="h", port=1),)),)},
        {"route": [{"path": "/", "handler": "proxy", "origins": ["x.com"], "backend": [{"host": "h", "port": 1}]}]},
        "route[0].origins",
        "only applies to wstunnel and process routes",
    ),
    (
        {"routes": (Route(handler="proxy", path="/"),)},
        {"route": [{"path": "/", "handler": "proxy"}]},
        "route[0].backend",
        "needs at least one",
    ),
    (
        {"routes": (wstunnel(backends=(Backend(),)),)},
        {"route": [{"path": "/ws/", "handler": "wstunnel", "backend": [{}]}]},
        "route[0].backend[0]",
        "'socket', 'host' and 'port', or 'app'",
    ),
    (
        {"max_read_idle": -1.0},
        {"server": {"max-read-idle": -1}},
        "server.max-read-idle",
        ">= 0",
    ),
    (
        {"listen": (ListenAddress("tcp", "127.0.0.1", 0, tls=True),)},
        {"server": {"listen": [{"address": "127.0.0.1:0", "tls": True}]}},
        "server.listen[0].tls",
        "needs [server.tls]",
    ),
    (
        {"routes": (Route(handler="cgi", path="/cgi/"),)},
        {"route": [{"path": "/cgi/", "handler": "cgi"}]},
        "route[0]",
        "needs server.document-root",
    ),
]


@pytest.mark.parametrize(("python", "mapping", "key", "fragment"), CASES)
def test_python_and_toml_give_the_same_verdict(
    python: dict[str, Any], mapping: dict[str, Any], key: str, fragment: str
) -> None:
    python.setdefault("listen", TCP)
    with pytest.raises(ConfigError) as built:
        ServerConfig(**python)
    assert any(k == key and fragment in m for k, m in built.value.problems), built.value.problems
    mapping.setdefault("server", {}).setdefault("listen", ["127.0.0.1:0"])
    with pytest.raises(ConfigError) as loaded:
        config_from_mapping(mapping)
    assert any(k == key and fragment in m for k, m in loaded.value.problems), loaded.value.problems


def test_evolve_is_checked_too() -> None:
    config = ServerConfig(listen=TCP, routes=(wstunnel(),))
    with pytest.raises(ConfigError, match=re.escape("route[0].ping-interval")):
        attrs.evolve(config, routes=(attrs.evolve(config.routes[0], ping_interval=-5.0),))


def test_a_valid_python_config_equals_the_loaded_one() -> None:
    built = ServerConfig(listen=TCP, routes=(wstunnel(frame_type="binary", origins=("example.com",)),))
    loaded = config_from_mapping(
        {
            "server": {"listen": ["127.0.0.1:0"]},
            "route": [
                {
                    "path": "/ws/",
                    "handler": "wstunnel",
                    "frame-type": "binary",
                    "origins": ["example.com"],
                    "backend": [{"host": "127.0.0.1", "port": 9}],
                }
            ],
        }
    )
    assert built == loaded
