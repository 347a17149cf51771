"""The strict configuration loader.

Theory of operation: the TOML document (or any mapping of the same shape) is
walked once, table by table.  Each table has a schema: a mapping of allowed
keys to small parser functions.  A parser returns the converted value or
raises :class:`_Bad` with a message that says what is allowed; the walker
records ``(key path, message)`` and carries on, so one run reports every
problem.  Only when there are none are the frozen attrs objects of
:mod:`wstrio._config` built.  Relative paths are resolved against the
directory of the configuration file.

Never imports trio.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import re
import shlex
import signal
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from wstrio._config import Backend, ListenAddress, Route, ServerConfig, TlsConfig
from wstrio._errors import ConfigError

__all__ = ["config_from_mapping", "load_config", "parse_listen"]

HANDLERS = ("wstunnel", "proxy", "cgi", "scgi", "fastcgi")
BALANCES = ("fair", "least-connection", "round-robin", "hash", "sticky")
BACKEND_HANDLERS = ("wstunnel", "proxy", "scgi", "fastcgi")
GATEWAY_HANDLERS = ("cgi", "scgi", "fastcgi")


class _Bad(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _bad(message: str) -> NoReturn:
    raise _Bad(message)


def _type_name(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


class _Walker:
    def __init__(self, source: str, base: Path) -> None:
        self.source = source
        self.base = base
        self.problems: list[tuple[str, str]] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def table(
        self,
        data: object,
        path: str,
        schema: Mapping[str, Callable[[Any], Any]],
        *,
        required: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """Parse ``data`` as a table with ``schema``; return the keys that parsed."""
        if not isinstance(data, Mapping):
            self.problem(path, f"must be a table, not {_type_name(data)}")
            return {}
        out: dict[str, Any] = {}
        for key, value in data.items():
            key_path = f"{path}.{key}" if path else str(key)
            parser = schema.get(key)
            if parser is None:
                hint = ""
                if isinstance(key, str) and key.replace("_", "-") in schema:
                    hint = f" (did you mean {key.replace('_', '-')!r}? keys use dashes)"
                allowed = ", ".join(sorted(schema))
                self.problem(key_path, f"unknown key{hint}; allowed keys here: {allowed}")
                continue
            try:
                out[key] = parser(value)
            except _Bad as exc:
                self.problem(key_path, exc.message)
        for key in required:
            if key not in data:
                self.problem(f"{path}.{key}" if path else key, "is required")
        return out

    # -- value parsers -------------------------------------------------------

    def path(self, value: object) -> Path:
        text = _string(value)
        if not text:
            _bad("must be a non-empty path")
        p = Path(os.path.expanduser(text))
        return p if p.is_absolute() else self.base / p


def _string(value: object) -> str:
    if not isinstance(value, str):
        _bad(f"must be a string, not {_type_name(value)} {value!r}")
    return value


def _bool(value: object) -> bool:
    # lighttpd spells booleans "enable"/"disable" and 1/0; accept those too.
    if isinstance(value, bool):
        return value
    if value in ("enable", 1):
        return True
    if value in ("disable", 0):
        return False
    _bad(f"must be true or false, not {value!r}")


def _int(low: int | None = None, high: int | None = None) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            _bad(f"must be an integer, not {_type_name(value)} {value!r}")
        if low is not None and value < low:
            _bad(f"must be at least {low}, not {value}")
        if high is not None and value > high:
            _bad(f"must be at most {high}, not {value}")
        return value

    return parse


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _bad(f"must be a number of seconds, not {_type_name(value)} {value!r}")
    if value < 0 or value != value or value == float("inf"):
        _bad(f"must be a finite number of seconds >= 0, not {value!r}")
    return float(value)


def _choice(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = _string(value)
        if text not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            _bad(f"must be one of {allowed}, not {text!r}")
        return text

    return parse


def _strings(*, nonempty_items: bool = True) -> Callable[[object], tuple[str, ...]]:
    def parse(value: object) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            _bad(f"must be an array of strings, not {_type_name(value)} {value!r}")
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                _bad(f"item {i} must be a string, not {_type_name(item)} {item!r}")
            if nonempty_items and not item:
                _bad(f"item {i} must not be empty")
            out.append(item)
        return tuple(out)

    return parse


def _string_table(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        _bad(f"must be a table of strings, not {_type_name(value)} {value!r}")
    out = []
    for k, v in value.items():
        if not isinstance(v, str):
            _bad(f"value of {k!r} must be a string, not {_type_name(v)} {v!r}")
        out.append((str(k), v))
    return tuple(out)


def _assign(value: object) -> tuple[tuple[str, str], ...]:
    # lighttpd cgi.assign: suffix -> interpreter; "" runs the file itself.
    # The interpreter is execve()d, not looked up in PATH, so it must be absolute.
    pairs = _string_table(value)
    out = []
    for suffix, interpreter in pairs:
        program = os.path.expanduser(interpreter) if interpreter else ""
        if program and not os.path.isabs(program):
            _bad(
                f"value of {suffix!r} must be an absolute path to an interpreter (e.g. '/usr/bin/python3'),"
                f" or '' to execute the script itself, not {interpreter!r}"
            )
        out.append((suffix, program))
    return tuple(out)


def _environment(value: object) -> tuple[tuple[str, str], ...]:
    pairs = _string_table(value)
    for name, text in pairs:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            _bad(f"variable name {name!r} must be letters, digits and '_', not starting with a digit")
        if "\0" in text:
            _bad(f"value of {name!r} must not contain a NUL character")
    return pairs


def _regex(value: object) -> re.Pattern[str]:
    text = _string(value)
    try:
        return re.compile(text)
    except re.error as exc:
        _bad(f"is not a valid regular expression ({exc}): {text!r}")


def _signal(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return int(signal.Signals(value))
        except ValueError:
            _bad(f"is not a signal number: {value}")
    text = _string(value).upper()
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return int(signal.Signals[text])
    except KeyError:
        _bad(f"must be a signal name such as 'SIGTERM' or 'SIGINT', or a number, not {value!r}")


def _import_object(value: object) -> Any:
    text = _string(value)
    module_name, sep, attr = text.partition(":")
    if not sep or not module_name or not attr:
        _bad(f"must be 'package.module:function', not {text!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # import errors of user code: report, do not crash check
        _bad(f"cannot import {text!r}: {type(exc).__name__}: {exc}")
    if not callable(obj):
        _bad(f"{text!r} is not callable")
    return obj


def _workers(value: object) -> int:
    if value == "auto":
        return os.cpu_count() or 1
    return _int(1, 256)(value)


def parse_listen(text: str, base: Path | None = None) -> ListenAddress:
    """Parse ``"host:port"``, ``"[v6]:port"``, ``":port"`` or ``"unix:/path"``.

    Raises:
        ValueError: with a message that says which forms are allowed.
    """
    try:
        return _listen_string(text, base or Path.cwd())
    except _Bad as exc:
        raise ValueError(exc.message) from None


def _listen_string(text: str, base: Path) -> ListenAddress:
    forms = "expected 'host:port', '[ipv6]:port', ':port' or 'unix:/path/to.sock'"
    if text.startswith("unix:"):
        rest = text[5:]
        if not rest:
            _bad(f"{forms}, not {text!r}")
        p = Path(os.path.expanduser(rest))
        return ListenAddress("unix", path=p if p.is_absolute() else base / p)
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            _bad(f"{forms}, not {text!r}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            _bad(f"{host!r} is not an IPv6 address in {text!r}")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            _bad(f"{forms}, not {text!r}")
    # isascii: str.isdigit() is also true for non-ASCII digits, some of which int() rejects.
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        _bad(f"port must be a number from 0 to 65535 in {text!r}")
    return ListenAddress("tcp", host, int(port_text))


class _Loader(_Walker):
    def listen(self, value: object) -> tuple[ListenAddress, ...]:
        if isinstance(value, (str, Mapping)):
            value = [value]
        if not isinstance(value, list) or not value:
            _bad('must be a non-empty array of addresses such as "127.0.0.1:8080"')
        out = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                try:
                    out.append(_listen_string(item, self.base))
                except _Bad as exc:
                    _bad(f"item {i}: {exc.message}")
            elif isinstance(item, Mapping):
                extra = set(item) - {"address", "tls"}
                if extra:
                    _bad(f"item {i}: unknown keys {sorted(extra)}; allowed: address, tls")
                if "address" not in item:
                    _bad(f"item {i}: 'address' is required")
                try:
                    addr = _listen_string(_string(item["address"]), self.base)
                    tls = _bool(item["tls"]) if "tls" in item else None
                except _Bad as exc:
                    _bad(f"item {i}: {exc.message}")
                if tls is not None and addr.kind == "tcp":
                    addr = ListenAddress(addr.kind, addr.host, addr.port, addr.path, tls)
                elif tls is not None:
                    addr = ListenAddress(addr.kind, path=addr.path, tls=tls)
                out.append(addr)
            else:
                _bad(f"item {i} must be a string or a table, not {_type_name(item)}")
        return tuple(out)

    def bin_path(self, value: object) -> tuple[str, ...]:
        # lighttpd splits bin-path on whitespace with no quoting; we accept an
        # array too, for paths with spaces.
        if isinstance(value, list):
            argv = _strings()(value)
        else:
            argv = tuple(_string(value).split())
        if not argv:
            _bad("must name a program")
        program = Path(os.path.expanduser(argv[0]))
        if not program.is_absolute():
            program = self.base / program
        return (str(program), *argv[1:])

    def backend(self, data: object, path: str, handler: str | None) -> Backend | None:
        schema: dict[str, Callable[[Any], Any]] = {
            "host": _string,
            "port": _int(0, 65535),
            "socket": self.path,
            "bin-path": self.bin_path,
            "min-procs": _int(0, 1024),
            "max-procs": _int(1, 1024),
            "max-load-per-proc": _int(1),
            "idle-timeout": _seconds,
            "disable-time": _seconds,
            "listen-backlog": _int(1),
            "bin-environment": _string_table,
            "bin-copy-environment": _strings(),
            "kill-signal": _signal,
            "connect-timeout": _seconds,
            "read-timeout": _seconds,
            "write-timeout": _seconds,
            "check-local": _bool,
            "label": _string,
            "app": _import_object,
        }
        before = len(self.problems)
        got = self.table(data, path, schema)
        if len(self.problems) > before:
            return None
        if "app" in got:
            others = sorted(set(got) & {"host", "port", "socket", "bin-path"})
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
            check_local=got.get("check-local", True),
            label=got.get("label"),
        )

    def route(self, data: object, path: str) -> Route | None:
        schema: dict[str, Callable[[Any], Any]] = {
            "path": _string,
            "regex": _regex,
            "extensions": _strings(),
            "handler": _choice(*HANDLERS),
            "backend": lambda v: v,  # walked below, with its own key paths
            "balance": _choice(*BALANCES),
            "frame-type": _choice("text", "binary"),
            "origins": _strings(),
            "ping-interval": _seconds,
            "pong-timeout": _seconds,
            "upgrade": _bool,
            "assign": _assign,
            "execute-x-only": _bool,
            "read-timeout": _seconds,
            "write-timeout": _seconds,
            "local-redirect": _bool,
            "environment": _environment,
            "forwarded": _bool,
            "replace-http-host": _bool,
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
        wstunnel_only = ("frame-type", "origins", "ping-interval", "pong-timeout")
        if handler is not None and handler != "wstunnel":
            for key in wstunnel_only:
                if key in got:
                    self.problem(f"{path}.{key}", f"only applies to wstunnel routes, not {handler!r}")
        if handler == "wstunnel" and "upgrade" in got:
            self.problem(f"{path}.upgrade", "does not apply to wstunnel routes (they always take WebSocket upgrades)")
        for key in ("assign", "execute-x-only", "read-timeout", "write-timeout"):
            if key in got and handler is not None and handler != "cgi":
                hint = " (scgi and fastcgi take it per [[route.backend]])" if key.endswith("-timeout") else ""
                self.problem(f"{path}.{key}", f"only applies to cgi routes{hint}")
        for key in ("local-redirect", "environment"):
            if key in got and handler is not None and handler not in GATEWAY_HANDLERS:
                self.problem(f"{path}.{key}", f"only applies to cgi, scgi and fastcgi routes, not {handler!r}")
        for key in ("forwarded", "replace-http-host"):
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
            upgrade=got.get("upgrade", False),
            assign=got.get("assign", ()),
            execute_x_only=got.get("execute-x-only", False),
            read_timeout=got.get("read-timeout", 0.0),
            write_timeout=got.get("write-timeout", 0.0),
            local_redirect=got.get("local-redirect", True),
            environment=got.get("environment", ()),
            forwarded=got.get("forwarded", False),
            replace_http_host=got.get("replace-http-host", False),
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

    def config(self, data: Mapping[str, Any]) -> ServerConfig | None:
        top = self.table(data, "", {"server": lambda v: v, "route": lambda v: v})
        server_data = top.get("server", {})
        tls_data = server_data.get("tls") if isinstance(server_data, Mapping) else None
        server = self.table(
            server_data,
            "server",
            {
                "listen": self.listen,
                "document-root": self.path,
                "index-files": _strings(),
                "mimetype-assign": _string_table,
                "max-connections": _int(1),
                "max-read-idle": _seconds,
                "max-write-idle": _seconds,
                "max-keep-alive-idle": _seconds,
                "max-keep-alive-requests": _int(1),
                "max-request-field-size": _int(256, 1 << 20),
                "max-request-headers": _int(1, 10000),
                "shutdown-timeout": _seconds,
                "tls": lambda v: v,
                "workers": _workers,
                "http2": _bool,
                "h2-max-concurrent-streams": _int(1, 1 << 20),
                "h2-initial-window-size": _int(1024, (1 << 31) - 1),
            },
        )
        tls = self.tls(tls_data, "server.tls") if tls_data is not None else None
        for key, value in server.get("mimetype-assign", ()):
            if not key.startswith("."):
                self.problem(f"server.mimetype-assign.{key}", "keys are extensions starting with '.'")
            if "/" not in value:
                self.problem(f"server.mimetype-assign.{key}", f"must be a MIME type like 'text/html', not {value!r}")
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
            "source": self.source,
        }
        names = {
            "listen": "listen",
            "document-root": "document_root",
            "index-files": "index_files",
            "mimetype-assign": "mimetype_assign",
            "max-connections": "max_connections",
            "max-read-idle": "max_read_idle",
            "max-write-idle": "max_write_idle",
            "max-keep-alive-idle": "max_keep_alive_idle",
            "max-keep-alive-requests": "max_keep_alive_requests",
            "max-request-field-size": "max_request_field_size",
            "max-request-headers": "max_request_headers",
            "shutdown-timeout": "shutdown_timeout",
            "workers": "workers",
            "http2": "http2",
            "h2-max-concurrent-streams": "h2_max_concurrent_streams",
            "h2-initial-window-size": "h2_initial_window_size",
        }
        for key, attr in names.items():
            if key in server:
                kwargs[attr] = server[key]
        return ServerConfig(**kwargs)


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


def load_config(path: str | os.PathLike[str]) -> ServerConfig:
    """Load and validate a TOML configuration file.

    Relative paths inside it are resolved against the file's directory.

    Raises:
        ConfigError: the file is missing, is not valid TOML, or has invalid
            keys or values (all of them are listed).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), [("", f"cannot read the file: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(p), [("", f"is not UTF-8 text: {exc}")]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), [("", f"is not valid TOML: {exc}")]) from exc
    return config_from_mapping(data, source=str(p), base_dir=p.resolve().parent)


def quote_argv(argv: tuple[str, ...]) -> str:
    """``argv`` as a shell-quoted string, for logs."""
    return shlex.join(argv)
