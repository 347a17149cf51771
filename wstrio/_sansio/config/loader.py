"""The strict configuration loader.

Theory of operation: the TOML document (or any mapping of the same shape) is
walked once, table by table.  Each table has a schema: a mapping of allowed
keys to small parser functions (:mod:`wstrio._sansio.config.values`).  A
parser returns the converted value or raises
:class:`~wstrio._sansio.config.values.Bad` with a message that says what is
allowed; the walker records ``(key path, message)`` and carries on, so one
run reports every problem.  Only when there are none are the frozen attrs
objects of :mod:`wstrio._config` built, and they check their values
themselves (:func:`wstrio._config.check_config`): a problem found there
still names the file and the key.  Relative paths are resolved against the
directory of the configuration file.

Never imports trio.
"""

from __future__ import annotations

import os
import signal
import sys
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from wstrio._config import (
    BACKEND_HANDLERS,
    BALANCES,
    GATEWAY_HANDLERS,
    HANDLERS,
    PROXY_TARGETS,
    Backend,
    ListenAddress,
    MetricsConfig,
    Route,
    ServerConfig,
    TlsConfig,
)
from wstrio._errors import ConfigError
from wstrio._sansio.config.values import (
    Walker,
    assign,
    bad,
    boolean,
    choice,
    environment,
    import_object,
    integer,
    networks,
    parse_listen,
    rate,
    regex,
    seconds,
    signal_number,
    string,
    string_table,
    strings,
    workers,
)
from wstrio._sansio.websocket.framing import FRAMINGS

__all__ = ["config_from_mapping", "config_from_text", "load_config", "parse_listen", "read_config_file"]


class _Loader(Walker):
    def backend(self, data: object, path: str, handler: str | None) -> Backend | None:
        schema: dict[str, Callable[[Any], Any]] = {
            "host": string,
            "port": integer(0, 65535),
            "socket": self.path,
            "bin-path": self.bin_path,
            "min-procs": integer(0, 1024),
            "max-procs": integer(1, 1024),
            "max-load-per-proc": integer(1),
            "idle-timeout": seconds,
            "disable-time": seconds,
            "listen-backlog": integer(1),
            "bin-environment": string_table,
            "bin-copy-environment": strings(),
            "kill-signal": signal_number,
            "connect-timeout": seconds,
            "read-timeout": seconds,
            "write-timeout": seconds,
            "max-connections": integer(0),
            "check-local": boolean,
            "label": string,
            "app": import_object,
            "send-proxy-protocol": choice("v1", "v2"),
        }
        before = len(self.problems)
        got = self.table(data, path, schema)
        if len(self.problems) > before:
            return None
        if "app" in got:
            others = sorted(set(got) & {"host", "port", "socket", "bin-path", "send-proxy-protocol"})
            if others:
                self.problem(path, f"an 'app' backend runs in wstrio; it takes no {', '.join(others)}")
                return None
            if handler != "wstunnel":
                self.problem(f"{path}.app", "in-process apps are only for wstunnel routes")
                return None
            return Backend(app=got["app"], label=got.get("label"))
        host = got.get("host")
        if isinstance(host, str) and host.startswith("/"):
            # lighttpd treats a host starting with "/" as a socket path.
            got.setdefault("socket", self.path(host))
            host = None
            got.pop("host")
        sock = got.get("socket")
        if sock is not None and (host is not None or "port" in got):
            self.problem(path, "give either 'socket' or 'host'/'port', not both")
            return None
        if sock is None:
            if "port" not in got:
                if "bin-path" in got or host is not None:
                    self.problem(f"{path}.port", "is required with 'host' (or use 'socket')")
                else:
                    self.problem(path, "needs 'socket', 'host' and 'port', or 'app'")
                return None
            if host is None:
                host = "127.0.0.1"
        if "bin-path" not in got:
            for key in (
                "min-procs",
                "max-procs",
                "max-load-per-proc",
                "idle-timeout",
                "listen-backlog",
                "bin-environment",
                "bin-copy-environment",
                "kill-signal",
            ):
                if key in got:
                    self.problem(f"{path}.{key}", "only applies to a spawned backend ('bin-path')")

        if "check-local" in got and handler not in ("scgi", "fastcgi"):
            self.problem(f"{path}.check-local", "only applies to scgi and fastcgi routes")
        # lighttpd: both default to 4 and min is clamped to max.
        max_procs = got.get("max-procs", 4)
        min_procs = min(got.get("min-procs", 4), max_procs)
        return Backend(
            host=host,
            port=got.get("port"),
            socket=sock,
            bin_path=got.get("bin-path", ()),
            min_procs=min_procs,
            max_procs=max_procs,
            max_load_per_proc=got.get("max-load-per-proc", 1),
            idle_timeout=got.get("idle-timeout", 60.0),
            disable_time=got.get("disable-time", 1.0),
            listen_backlog=got.get("listen-backlog", 1024),
            bin_environment=got.get("bin-environment", ()),
            bin_copy_environment=got.get("bin-copy-environment", ()),
            kill_signal=got.get("kill-signal", int(signal.SIGTERM)),
            connect_timeout=got.get("connect-timeout", 8.0),
            read_timeout=got.get("read-timeout", 0.0),
            write_timeout=got.get("write-timeout", 0.0),
            max_connections=got.get("max-connections", 0),
            check_local=got.get("check-local", True),
            label=got.get("label"),
            send_proxy_protocol=got.get("send-proxy-protocol"),
        )

    def route(self, data: object, path: str) -> Route | None:
        schema: dict[str, Callable[[Any], Any]] = {
            "path": string,
            "regex": regex,
            "extensions": strings(),
            "handler": choice(*HANDLERS),
            "backend": lambda v: v,  # walked below, with its own key paths
            "balance": choice(*BALANCES),
            "frame-type": choice("text", "binary"),
            "origins": strings(),
            "ping-interval": seconds,
            "pong-timeout": seconds,
            "max-frame-size": integer(0),
            "max-message-size": integer(0),
            "upgrade": boolean,
            "assign": assign,
            "execute-x-only": boolean,
            "read-timeout": seconds,
            "write-timeout": seconds,
            "local-redirect": boolean,
            "environment": environment,
            "forwarded": boolean,
            "replace-http-host": boolean,
            "proxy-target": choice(*PROXY_TARGETS),
            "allow": networks,
            "deny": networks,
            "max-connections-per-ip": integer(0),
            "max-tunnels": integer(0),
            "max-request-body-size": integer(0),
            "max-tunnel-lifetime": seconds,
            "queue-size": integer(0),
            "queue-timeout": seconds,
            "framing": choice(*FRAMINGS),
            "length-bytes": length_bytes,
            "flush-timeout": seconds,
            "command": strings(),
            "working-directory": self.path,
            "max-processes": integer(0),
            "stderr": choice("log", "client", "discard"),
            "pty": boolean,
            "bin-environment": environment,
            "bin-copy-environment": strings(),
            "kill-grace": seconds,
        }
        before = len(self.problems)
        got = self.table(data, path, schema, required=("handler",))
        handler = got.get("handler")
        matchers = [k for k in ("path", "regex", "extensions") if k in got]
        if not matchers and isinstance(data, Mapping) and not any(k in data for k in ("path", "regex", "extensions")):
            self.problem(path, "needs one of 'path', 'regex' or 'extensions' to say which requests it takes")
        elif len(matchers) > 1:
            self.problem(path, f"give only one of 'path', 'regex', 'extensions', not {matchers}")
        if "path" in got and not got["path"].startswith("/"):
            self.problem(f"{path}.path", f"must start with '/', not {got['path']!r}")
        wstunnel_only: tuple[str, ...] = ("frame-type", "origins", "ping-interval", "pong-timeout", "max-frame-size")
        wstunnel_only += ("max-message-size", "framing", "length-bytes", "flush-timeout")
        if handler is not None and handler not in ("wstunnel", "process"):
            for key in wstunnel_only:
                if key in got:
                    self.problem(f"{path}.{key}", f"only applies to wstunnel and process routes, not {handler!r}")
        process_only: tuple[str, ...] = ("command", "working-directory", "max-processes", "stderr", "pty")
        process_only += ("bin-environment",)
        process_only += ("bin-copy-environment", "kill-grace")
        if handler is not None and handler != "process":
            for key in process_only:
                if key in got:
                    self.problem(f"{path}.{key}", f"only applies to process routes, not {handler!r}")
        if handler == "process":
            if not got.get("command"):
                self.problem(
                    f"{path}.command", 'a process route needs the program to run, e.g. command = ["./count.sh"]'
                )
            if "upgrade" in got:
                self.problem(f"{path}.upgrade", "does not apply to process routes (they always take WebSockets)")
        if "length-bytes" in got and got.get("framing") != "length-prefixed":
            self.problem(f"{path}.length-bytes", 'only applies with framing = "length-prefixed"')
        if "flush-timeout" in got and got.get("framing", "lines" if handler == "process" else "stream") not in (
            "lines",
            "nul",
        ):
            self.problem(f"{path}.flush-timeout", 'only applies with framing = "lines" or "nul"')
        if handler == "wstunnel" and "upgrade" in got:
            self.problem(f"{path}.upgrade", "does not apply to wstunnel routes (they always take WebSocket upgrades)")
        for key in ("assign", "execute-x-only", "read-timeout", "write-timeout"):
            if key in got and handler is not None and handler != "cgi":
                hint = " (scgi and fastcgi take it per [[route.backend]])" if key.endswith("-timeout") else ""
                self.problem(f"{path}.{key}", f"only applies to cgi routes{hint}")
        for key in ("local-redirect", "environment"):
            if key in got and handler is not None and handler not in GATEWAY_HANDLERS:
                self.problem(f"{path}.{key}", f"only applies to cgi, scgi and fastcgi routes, not {handler!r}")
        if "max-request-body-size" in got and handler == "wstunnel":
            self.problem(
                f"{path}.max-request-body-size", "only applies to proxy, cgi, scgi and fastcgi routes, not 'wstunnel'"
            )
        for key in ("forwarded", "replace-http-host", "proxy-target"):
            if key in got and handler is not None and handler != "proxy":
                self.problem(f"{path}.{key}", f"only applies to proxy routes, not {handler!r}")
        backends: list[Backend] = []
        raw_backends = data.get("backend", []) if isinstance(data, Mapping) else []
        if isinstance(raw_backends, Mapping):
            raw_backends = [raw_backends]
        if not isinstance(raw_backends, list):
            self.problem(f"{path}.backend", "must be an array of tables ([[route.backend]])")
            raw_backends = []
        if handler in BACKEND_HANDLERS and not raw_backends:
            self.problem(f"{path}.backend", f"a {handler} route needs at least one [[route.backend]]")
        if handler == "process" and raw_backends:
            self.problem(f"{path}.backend", "process routes run their command per WebSocket and take no backend")
            raw_backends = []
        if handler == "cgi" and raw_backends:
            self.problem(f"{path}.backend", "cgi routes run scripts under document-root and take no backend")
            raw_backends = []
        for i, raw in enumerate(raw_backends):
            b = self.backend(raw, f"{path}.backend[{i}]", handler)
            if b is not None:
                backends.append(b)
        if len({b.check_local for b in backends}) > 1:
            # The request is matched against document-root before a backend
            # is chosen, so the hosts of one route cannot disagree.
            self.problem(f"{path}.backend", "check-local must be the same for every backend of a route")
        if len(self.problems) > before or handler is None:
            return None
        return Route(
            handler=handler,
            path=got.get("path"),
            regex=got.get("regex"),
            extensions=got.get("extensions", ()),
            backends=tuple(backends),
            balance=got.get("balance", "fair"),
            frame_type=got.get("frame-type", "text"),
            origins=got.get("origins", ()),
            ping_interval=got.get("ping-interval", 0.0),
            pong_timeout=got.get("pong-timeout"),
            max_frame_size=got.get("max-frame-size", 0),
            max_message_size=got.get("max-message-size", 0),
            upgrade=got.get("upgrade", False),
            assign=got.get("assign", ()),
            execute_x_only=got.get("execute-x-only", False),
            read_timeout=got.get("read-timeout", 0.0),
            write_timeout=got.get("write-timeout", 0.0),
            local_redirect=got.get("local-redirect", True),
            environment=got.get("environment", ()),
            forwarded=got.get("forwarded", False),
            replace_http_host=got.get("replace-http-host", False),
            proxy_target=got.get("proxy-target", "normalized"),
            allow=got.get("allow", ()),
            deny=got.get("deny", ()),
            max_connections_per_ip=got.get("max-connections-per-ip", 0),
            max_tunnels=got.get("max-tunnels", 0),
            max_request_body_size=got.get("max-request-body-size"),
            max_tunnel_lifetime=got.get("max-tunnel-lifetime"),
            queue_size=got.get("queue-size", 100),
            queue_timeout=got.get("queue-timeout", 10.0),
            framing=got.get("framing"),
            length_bytes=got.get("length-bytes", 4),
            flush_timeout=got.get("flush-timeout", 0.0),
            command=tuple(got.get("command", ())),
            working_directory=got.get("working-directory", self.base if handler == "process" else None),
            max_processes=got.get("max-processes", 0),
            stderr=got.get("stderr", "log"),
            pty=got.get("pty", False),
            bin_environment=got.get("bin-environment", ()),
            bin_copy_environment=tuple(got.get("bin-copy-environment", ())),
            kill_grace=got.get("kill-grace", 5.0),
        )

    def tls(self, data: object, path: str) -> TlsConfig | None:
        got = self.table(
            data,
            path,
            {"certificate": self.path, "private-key": self.path},
            required=("certificate", "private-key"),
        )
        if "certificate" not in got or "private-key" not in got:
            return None
        return TlsConfig(certificate=got["certificate"], private_key=got["private-key"])

    def metrics(self, data: object, path: str) -> MetricsConfig | None:
        got = self.table(data, path, {"listen": self.metrics_listen, "path": string}, required=("listen",))
        if "listen" not in got:
            return None
        metrics_path = got.get("path", "/metrics")
        if not metrics_path.startswith("/"):
            self.problem(f"{path}.path", f"must start with '/', not {metrics_path!r}")
            return None
        return MetricsConfig(listen=got["listen"], path=metrics_path)

    def metrics_listen(self, value: object) -> ListenAddress:
        addresses = self.listen(value)
        if len(addresses) != 1 or addresses[0].kind == "systemd" or addresses[0].tls or addresses[0].proxy_protocol:
            bad('must be one address such as "127.0.0.1:9108" or "unix:/run/wstrio/metrics.sock" (no TLS)')
        return addresses[0]

    def config(self, data: Mapping[str, Any]) -> ServerConfig | None:
        top = self.table(data, "", {"server": lambda v: v, "route": lambda v: v})
        server_data = top.get("server", {})
        tls_data = server_data.get("tls") if isinstance(server_data, Mapping) else None
        metrics_data = server_data.get("metrics") if isinstance(server_data, Mapping) else None
        server = self.table(
            server_data,
            "server",
            {
                "listen": self.listen,
                "document-root": self.path,
                "index-files": strings(),
                "mimetype-assign": string_table,
                "static-deny": strings(),
                "max-connections": integer(1),
                "max-read-idle": seconds,
                "max-write-idle": seconds,
                "max-keep-alive-idle": seconds,
                "max-request-head-time": seconds,
                "max-tunnel-lifetime": seconds,
                "max-buffer-memory": integer(0),
                "access-log": self.path,
                "health-path": string,
                "trusted-proxies": networks,
                "forwarded-trust": networks,
                "access-log-format": choice("text", "json"),
                "max-keep-alive-requests": integer(1),
                "max-connections-per-ip": integer(0),
                "max-tunnels": integer(1),
                "request-rate": rate,
                "request-burst": integer(1),
                "max-request-body-size": integer(0),
                "max-request-field-size": integer(256, 1 << 20),
                "max-request-headers": integer(1, 10000),
                "shutdown-timeout": seconds,
                "drain-timeout": seconds,
                "devconsole": boolean,
                "tls": lambda v: v,
                "metrics": lambda v: v,
                "workers": workers,
                "http2": boolean,
                "h2-max-concurrent-streams": integer(1, 1 << 20),
                "h2-initial-window-size": integer(1024, (1 << 31) - 1),
            },
        )
        tls = self.tls(tls_data, "server.tls") if tls_data is not None else None
        metrics = self.metrics(metrics_data, "server.metrics") if metrics_data is not None else None
        for key, value in server.get("mimetype-assign", ()):
            if not key.startswith("."):
                self.problem(f"server.mimetype-assign.{key}", "keys are extensions starting with '.'")
            if "/" not in value:
                self.problem(f"server.mimetype-assign.{key}", f"must be a MIME type like 'text/html', not {value!r}")
        if "request-burst" in server and not server.get("request-rate"):
            self.problem("server.request-burst", "only applies with server.request-rate")
        raw_routes = top.get("route", [])
        if isinstance(raw_routes, Mapping):
            raw_routes = [raw_routes]
        if not isinstance(raw_routes, list):
            self.problem("route", "must be an array of tables ([[route]])")
            raw_routes = []
        routes = [self.route(raw, f"route[{i}]") for i, raw in enumerate(raw_routes)]
        for i, route in enumerate(routes):
            if route is not None and route.handler == "cgi" and "document-root" not in server:
                self.problem(f"route[{i}]", "a cgi route needs server.document-root (scripts are found there)")
            if (
                route is not None
                and route.handler in ("scgi", "fastcgi")
                and route.backends
                and route.backends[0].check_local
                and "document-root" not in server
            ):
                self.problem(
                    f"route[{i}]",
                    "check-local = true (the default) needs server.document-root (requests must name a file"
                    " there); set check-local = false in [[route.backend]] to send every request to the backend",
                )
        if self.problems:
            return None
        kwargs: dict[str, Any] = {
            "routes": tuple(r for r in routes if r is not None),
            "tls": tls,
            "metrics": metrics,
            "source": self.source,
        }
        names = {
            "listen": "listen",
            "document-root": "document_root",
            "index-files": "index_files",
            "mimetype-assign": "mimetype_assign",
            "static-deny": "static_deny",
            "max-connections": "max_connections",
            "max-read-idle": "max_read_idle",
            "max-write-idle": "max_write_idle",
            "max-keep-alive-idle": "max_keep_alive_idle",
            "max-request-head-time": "max_request_head_time",
            "max-tunnel-lifetime": "max_tunnel_lifetime",
            "max-buffer-memory": "max_buffer_memory",
            "access-log": "access_log",
            "health-path": "health_path",
            "trusted-proxies": "trusted_proxies",
            "forwarded-trust": "forwarded_trust",
            "access-log-format": "access_log_format",
            "max-keep-alive-requests": "max_keep_alive_requests",
            "max-connections-per-ip": "max_connections_per_ip",
            "max-tunnels": "max_tunnels",
            "request-rate": "request_rate",
            "request-burst": "request_burst",
            "max-request-body-size": "max_request_body_size",
            "max-request-field-size": "max_request_field_size",
            "max-request-headers": "max_request_headers",
            "shutdown-timeout": "shutdown_timeout",
            "drain-timeout": "drain_timeout",
            "devconsole": "devconsole",
            "workers": "workers",
            "http2": "http2",
            "h2-max-concurrent-streams": "h2_max_concurrent_streams",
            "h2-initial-window-size": "h2_initial_window_size",
        }
        for key, attr in names.items():
            if key in server:
                kwargs[attr] = server[key]
        return ServerConfig(**kwargs)


def length_bytes(value: object) -> int:
    """``length-bytes``: 2, 4 or 8."""
    if isinstance(value, bool) or value not in (2, 4, 8):
        bad(f"must be 2, 4 or 8, not {value!r}")
    assert isinstance(value, int)
    return value


def config_from_mapping(
    data: Mapping[str, Any],
    *,
    source: str = "<mapping>",
    base_dir: str | os.PathLike[str] | None = None,
) -> ServerConfig:
    """Build a :class:`ServerConfig` from a mapping shaped like the TOML file.

    Args:
        data: e.g. ``{"server": {"listen": ["127.0.0.1:0"]}, "route": [...]}``.
        source: name used in error messages.
        base_dir: directory relative paths are resolved against (default: cwd).

    Raises:
        ConfigError: listing every problem, each with its key path.
    """
    loader = _Loader(source, Path(base_dir) if base_dir is not None else Path.cwd())
    config = loader.config(data)
    if config is None:
        raise ConfigError(source, loader.problems)
    return config


def read_config_file(path: str | os.PathLike[str]) -> tuple[str, str, Path]:
    """Read a configuration once: ``(text, source name, base directory)``.

    ``"-"`` is standard input, with the current directory as the base for
    relative paths; so is a path that is not a regular file (``/dev/stdin``
    on a pipe, a FIFO), which cannot be read twice.  A regular file's base is
    its directory (symbolic links resolved).

    Raises:
        ConfigError: it cannot be read, or is not UTF-8.
    """
    if str(path) == "-":
        source, reader = "<stdin>", sys.stdin.buffer.read
    else:
        source, reader = str(path), Path(path).read_bytes

    try:
        raw = reader()
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read the file: {exc.strerror or exc}")]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(source, [("", f"is not UTF-8 text: {exc}")]) from exc
    base = Path.cwd()
    if source != "<stdin>":
        real = Path(path).resolve()
        if real.is_file():
            base = real.parent
    return text, source, base


def config_from_text(text: str, *, source: str, base_dir: str | os.PathLike[str]) -> ServerConfig:
    """Build a :class:`ServerConfig` from TOML text (relative paths against ``base_dir``).

    Raises:
        ConfigError: it is not valid TOML, or has invalid keys or values.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [("", f"is not valid TOML: {exc}")]) from exc
    return config_from_mapping(data, source=source, base_dir=base_dir)


def load_config(path: str | os.PathLike[str]) -> ServerConfig:
    """Load and validate a TOML configuration file (``"-"``: standard input).

    The file is read once.  Relative paths inside it are resolved against
    the file's directory (standard input, or a pipe: the current directory).

    Raises:
        ConfigError: the file is missing, is not valid TOML, or has invalid
            keys or values (all of them are listed).
    """
    text, source, base = read_config_file(path)
    return config_from_text(text, source=source, base_dir=base)
