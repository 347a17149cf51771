"""Validation of configuration objects, however they were built.

The TOML loader checks the *file*: unknown keys, types, and keys given where
they do not apply.  This module checks the *values* of the frozen objects,
so a :class:`~wstrio.ServerConfig` built in Python is held to the same rules
as one loaded from TOML: :meth:`ServerConfig.__attrs_post_init__` calls
:func:`check_config` and raises :class:`~wstrio.ConfigError` listing every
problem, with the same key paths the loader uses (``route[0].backend[1].port``).

Never imports trio.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wstrio._config import Backend, Route, ServerConfig

__all__ = ["check_config"]

HANDLERS = ("wstunnel", "proxy", "cgi", "scgi", "fastcgi")
BALANCES = ("fair", "least-connection", "round-robin", "hash", "sticky")
BACKEND_HANDLERS = ("wstunnel", "proxy", "scgi", "fastcgi")
GATEWAY_HANDLERS = ("cgi", "scgi", "fastcgi")


def _seconds(problems: list[tuple[str, str]], path: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or math.isnan(value):
        problems.append((path, f"must be a number of seconds >= 0, not {value!r}"))


def _count(problems: list[tuple[str, str]], path: str, value: int, low: int, high: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        limit = f"from {low} to {high}" if high is not None else f"at least {low}"
        problems.append((path, f"must be an integer {limit}, not {value!r}"))


def _check_backend(problems: list[tuple[str, str]], path: str, backend: Backend, handler: str) -> None:
    kinds = [
        name
        for name, given in (
            ("app", backend.app is not None),
            ("socket", backend.socket is not None),
            ("host/port", backend.host is not None or backend.port is not None),
        )
        if given
    ]
    if len(kinds) != 1:
        what = " and ".join(kinds) if kinds else "none"
        problems.append((path, f"needs exactly one of 'socket', 'host' and 'port', or 'app', not {what}"))
    if backend.app is not None:
        if handler != "wstunnel":
            problems.append((f"{path}.app", "in-process apps are only for wstunnel routes"))
        if backend.bin_path:
            problems.append((f"{path}.bin-path", "an 'app' backend runs in wstrio; it takes no bin-path"))
    if backend.host is not None and backend.port is None:
        problems.append((f"{path}.port", "is required with 'host' (or use 'socket')"))
    if backend.port is not None:
        _count(problems, f"{path}.port", backend.port, 0, 65535)
    if backend.bin_path and not backend.bin_path[0]:
        problems.append((f"{path}.bin-path", "must name a program"))
    _count(problems, f"{path}.min-procs", backend.min_procs, 0, 1024)
    _count(problems, f"{path}.max-procs", backend.max_procs, 1, 1024)
    if (
        isinstance(backend.min_procs, int)
        and isinstance(backend.max_procs, int)
        and backend.min_procs > backend.max_procs
    ):
        problems.append(
            (f"{path}.min-procs", f"must not exceed max-procs ({backend.max_procs}), not {backend.min_procs}")
        )
    _count(problems, f"{path}.max-load-per-proc", backend.max_load_per_proc, 1)
    _count(problems, f"{path}.listen-backlog", backend.listen_backlog, 1)
    for key, value in (
        ("idle-timeout", backend.idle_timeout),
        ("disable-time", backend.disable_time),
        ("connect-timeout", backend.connect_timeout),
        ("read-timeout", backend.read_timeout),
        ("write-timeout", backend.write_timeout),
    ):
        _seconds(problems, f"{path}.{key}", value)


def _check_route(problems: list[tuple[str, str]], path: str, route: Route, config: ServerConfig) -> None:
    handler = route.handler
    if handler not in HANDLERS:
        problems.append((f"{path}.handler", f"must be one of {', '.join(map(repr, HANDLERS))}, not {handler!r}"))
        return
    matchers = [k for k, v in (("path", route.path), ("regex", route.regex), ("extensions", route.extensions)) if v]
    if not matchers:
        problems.append((path, "needs one of 'path', 'regex' or 'extensions' to say which requests it takes"))
    elif len(matchers) > 1:
        problems.append((path, f"give only one of 'path', 'regex', 'extensions', not {matchers}"))
    if route.path is not None and not route.path.startswith("/"):
        problems.append((f"{path}.path", f"must start with '/', not {route.path!r}"))
    if route.balance not in BALANCES:
        problems.append((f"{path}.balance", f"must be one of {', '.join(map(repr, BALANCES))}, not {route.balance!r}"))
    if route.frame_type not in ("text", "binary"):
        problems.append((f"{path}.frame-type", f"must be 'text' or 'binary', not {route.frame_type!r}"))
    _seconds(problems, f"{path}.ping-interval", route.ping_interval)
    if route.pong_timeout is not None:
        _seconds(problems, f"{path}.pong-timeout", route.pong_timeout)
    if handler != "wstunnel":
        for key, given in (
            ("frame-type", route.frame_type != "text"),
            ("origins", bool(route.origins)),
            ("ping-interval", bool(route.ping_interval)),
            ("pong-timeout", route.pong_timeout is not None),
        ):
            if given:
                problems.append((f"{path}.{key}", f"only applies to wstunnel routes, not {handler!r}"))
    elif route.upgrade:
        problems.append((f"{path}.upgrade", "does not apply to wstunnel routes (they always take WebSocket upgrades)"))
    if route.assign and handler != "cgi":
        problems.append((f"{path}.assign", "only applies to cgi routes"))
    if handler != "proxy":
        for key, given in (("forwarded", route.forwarded), ("replace-http-host", route.replace_http_host)):
            if given:
                problems.append((f"{path}.{key}", f"only applies to proxy routes, not {handler!r}"))
    if handler in BACKEND_HANDLERS and not route.backends:
        problems.append((f"{path}.backend", f"a {handler} route needs at least one [[route.backend]]"))
    if handler == "cgi":
        if route.backends:
            problems.append((f"{path}.backend", "cgi routes run scripts under document-root and take no backend"))
        if config.document_root is None:
            problems.append((path, "a cgi route needs server.document-root (scripts are found there)"))
    for i, backend in enumerate(route.backends):
        _check_backend(problems, f"{path}.backend[{i}]", backend, handler)


def check_config(config: ServerConfig) -> list[tuple[str, str]]:
    """Every problem with ``config``'s values, as ``(key path, message)`` pairs."""
    problems: list[tuple[str, str]] = []
    if not config.listen:
        problems.append(("server.listen", 'must be a non-empty array of addresses such as "127.0.0.1:8080"'))
    for i, address in enumerate(config.listen):
        kind: str = address.kind  # checked at run time: Python callers are not type-checked
        if kind == "tcp":
            _count(problems, f"server.listen[{i}].port", address.port, 0, 65535)
        elif kind == "unix":
            if address.path is None:
                problems.append((f"server.listen[{i}]", "a unix listener needs a path"))
        else:
            problems.append((f"server.listen[{i}]", f"kind must be 'tcp' or 'unix', not {kind!r}"))
        if address.tls and config.tls is None:
            problems.append((f"server.listen[{i}].tls", "needs [server.tls] (certificate and private-key)"))
    _count(problems, "server.max-connections", config.max_connections, 1)
    _count(problems, "server.max-keep-alive-requests", config.max_keep_alive_requests, 1)
    _count(problems, "server.max-request-field-size", config.max_request_field_size, 256, 1 << 20)
    _count(problems, "server.max-request-headers", config.max_request_headers, 1, 10000)
    _count(problems, "server.workers", config.workers, 1, 256)
    _count(problems, "server.h2-max-concurrent-streams", config.h2_max_concurrent_streams, 1, 1 << 20)
    _count(problems, "server.h2-initial-window-size", config.h2_initial_window_size, 1024, (1 << 31) - 1)
    for key, value in (
        ("max-read-idle", config.max_read_idle),
        ("max-write-idle", config.max_write_idle),
        ("max-keep-alive-idle", config.max_keep_alive_idle),
        ("shutdown-timeout", config.shutdown_timeout),
    ):
        _seconds(problems, f"server.{key}", value)
    for i, route in enumerate(config.routes):
        _check_route(problems, f"route[{i}]", route, config)
    return problems
