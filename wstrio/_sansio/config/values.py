"""The value parsers of the configuration loader, and the walker that applies them.

A schema maps each allowed key of a table to a small parser function.  A
parser returns the converted value or raises :class:`Bad` with a message
that says what is allowed; :meth:`Walker.table` records ``(key path,
message)`` and carries on, so one run reports every problem.  Parsers that
resolve relative paths (``socket``, ``bin-path``, ``listen``) are methods of
the :class:`Walker`, which knows the configuration file's directory.

Never imports trio.
"""

from __future__ import annotations

import difflib
import importlib
import ipaddress
import os
import re
import signal
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import attrs

from wstrio._config import ListenAddress, network_problem, parse_networks

__all__ = [
    "Bad",
    "Walker",
    "assign",
    "bad",
    "boolean",
    "choice",
    "environment",
    "import_object",
    "integer",
    "listen_string",
    "parse_listen",
    "regex",
    "seconds",
    "signal_number",
    "string",
    "string_table",
    "strings",
    "type_name",
    "workers",
]


class Bad(Exception):
    """A value does not parse; ``message`` says what is allowed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def bad(message: str) -> NoReturn:
    """Raise :class:`Bad` (parsers read as ``bad("must be ...")``)."""
    raise Bad(message)


def type_name(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


class Walker:
    """Walks tables against their schemas and records every problem with its key path."""

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
            self.problem(path, f"must be a table, not {type_name(data)}")
            return {}
        out: dict[str, Any] = {}
        for key, value in data.items():
            key_path = f"{path}.{key}" if path else str(key)
            parser = schema.get(key)
            if parser is None:
                hint = ""
                if isinstance(key, str) and key.replace("_", "-") in schema:
                    hint = f" (did you mean {key.replace('_', '-')!r}? keys use dashes)"
                elif isinstance(key, str) and (close := did_you_mean(key.replace("_", "-"), schema)):
                    hint = f" (did you mean {close!r}?)"
                allowed = ", ".join(sorted(schema))
                self.problem(key_path, f"unknown key{hint}; allowed keys here: {allowed}")
                continue
            try:
                out[key] = parser(value)
            except Bad as exc:
                self.problem(key_path, exc.message)
        for key in required:
            if key not in data:
                self.problem(f"{path}.{key}" if path else key, "is required")
        return out

    # -- value parsers -------------------------------------------------------

    def path(self, value: object) -> Path:
        text = string(value)
        if not text:
            bad("must be a non-empty path")
        p = Path(os.path.expanduser(text))
        return p if p.is_absolute() else self.base / p

    def listen(self, value: object) -> tuple[ListenAddress, ...]:
        if isinstance(value, (str, Mapping)):
            value = [value]
        if not isinstance(value, list) or not value:
            bad('must be a non-empty array of addresses such as "127.0.0.1:8080"')
        out = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                try:
                    out.append(listen_string(item, self.base))
                except Bad as exc:
                    bad(f"item {i}: {exc.message}")
            elif isinstance(item, Mapping):
                extra = set(item) - {"address", "tls", "proxy-protocol"}
                if extra:
                    bad(f"item {i}: unknown keys {sorted(extra)}; allowed: address, tls, proxy-protocol")
                if "address" not in item:
                    bad(f"item {i}: 'address' is required")
                try:
                    addr = listen_string(string(item["address"]), self.base)
                    tls = boolean(item["tls"]) if "tls" in item else None
                    proxied = boolean(item["proxy-protocol"]) if "proxy-protocol" in item else False
                except Bad as exc:
                    bad(f"item {i}: {exc.message}")
                if tls is not None:
                    addr = attrs.evolve(addr, tls=tls)
                if proxied:
                    addr = attrs.evolve(addr, proxy_protocol=True)
                out.append(addr)
            else:
                bad(f"item {i} must be a string or a table, not {type_name(item)}")
        return tuple(out)

    def bin_path(self, value: object) -> tuple[str, ...]:
        # lighttpd splits bin-path on whitespace with no quoting; we accept an
        # array too, for paths with spaces.
        if isinstance(value, list):
            argv = strings()(value)
        else:
            argv = tuple(string(value).split())
        if not argv:
            bad("must name a program")
        program = Path(os.path.expanduser(argv[0]))
        if not program.is_absolute():
            program = self.base / program
        return (str(program), *argv[1:])


def string(value: object) -> str:
    if not isinstance(value, str):
        bad(f"must be a string, not {type_name(value)} {value!r}")
    return value


def boolean(value: object) -> bool:
    # lighttpd spells booleans "enable"/"disable" and 1/0; accept those too.
    if isinstance(value, bool):
        return value
    if value in ("enable", 1):
        return True
    if value in ("disable", 0):
        return False
    bad(f"must be true or false, not {value!r}")


def integer(low: int | None = None, high: int | None = None) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            bad(f"must be an integer, not {type_name(value)} {value!r}")
        if low is not None and value < low:
            bad(f"must be at least {low}, not {value}")
        if high is not None and value > high:
            bad(f"must be at most {high}, not {value}")
        return value

    return parse


def seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        bad(f"must be a number of seconds, not {type_name(value)} {value!r}")
    if value < 0 or value != value or value == float("inf"):
        bad(f"must be a finite number of seconds >= 0, not {value!r}")
    return float(value)


def rate(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        bad(f"must be a number of requests per second, not {type_name(value)} {value!r}")
    if value < 0 or value != value or value == float("inf"):
        bad(f"must be a finite number of requests per second >= 0, not {value!r}")
    return float(value)


def networks(value: object) -> tuple[Any, ...]:
    items = strings()(value)
    for i, item in enumerate(items):
        problem = network_problem(item)
        if problem is not None:
            bad(f"item {i}: {problem}")
    return parse_networks(items)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The one choice ``word`` is most likely a typo of (``hots`` -> ``host``), or ``None``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.7)
    return close[0] if close else None


def choice(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = string(value)
        if text not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            close = did_you_mean(text, choices) or did_you_mean(text.lower(), choices)
            hint = f" (did you mean {close!r}?)" if close else ""
            bad(f"must be one of {allowed}, not {text!r}{hint}")
        return text

    return parse


def strings(*, nonempty_items: bool = True) -> Callable[[object], tuple[str, ...]]:
    def parse(value: object) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            bad(f"must be an array of strings, not {type_name(value)} {value!r}")
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                bad(f"item {i} must be a string, not {type_name(item)} {item!r}")
            if nonempty_items and not item:
                bad(f"item {i} must not be empty")
            out.append(item)
        return tuple(out)

    return parse


def string_table(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        bad(f"must be a table of strings, not {type_name(value)} {value!r}")
    out = []
    for k, v in value.items():
        if not isinstance(v, str):
            bad(f"value of {k!r} must be a string, not {type_name(v)} {v!r}")
        out.append((str(k), v))
    return tuple(out)


def assign(value: object) -> tuple[tuple[str, str], ...]:
    # lighttpd cgi.assign: suffix -> interpreter; "" runs the file itself.
    # The interpreter is execve()d, not looked up in PATH, so it must be absolute.
    pairs = string_table(value)
    out = []
    for suffix, interpreter in pairs:
        program = os.path.expanduser(interpreter) if interpreter else ""
        if program and not os.path.isabs(program):
            bad(
                f"value of {suffix!r} must be an absolute path to an interpreter (e.g. '/usr/bin/python3'),"
                f" or '' to execute the script itself, not {interpreter!r}"
            )
        out.append((suffix, program))
    return tuple(out)


def environment(value: object) -> tuple[tuple[str, str], ...]:
    pairs = string_table(value)
    for name, text in pairs:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            bad(f"variable name {name!r} must be letters, digits and '_', not starting with a digit")
        if "\0" in text:
            bad(f"value of {name!r} must not contain a NUL character")
    return pairs


def regex(value: object) -> re.Pattern[str]:
    text = string(value)
    try:
        return re.compile(text)
    except re.error as exc:
        bad(f"is not a valid regular expression ({exc}): {text!r}")


def signal_number(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return int(signal.Signals(value))
        except ValueError:
            bad(f"is not a signal number: {value}")
    text = string(value).upper()
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return int(signal.Signals[text])
    except KeyError:
        bad(f"must be a signal name such as 'SIGTERM' or 'SIGINT', or a number, not {value!r}")


def import_object(value: object) -> Any:
    text = string(value)
    module_name, sep, attr = text.partition(":")
    if not sep or not module_name or not attr:
        bad(f"must be 'package.module:function', not {text!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # import errors of user code: report, do not crash check
        bad(f"cannot import {text!r}: {type(exc).__name__}: {exc}")
    if not callable(obj):
        bad(f"{text!r} is not callable")
    return obj


def workers(value: object) -> int:
    if value == "auto":
        return os.cpu_count() or 1
    return integer(1, 256)(value)


def parse_listen(text: str, base: Path | None = None) -> ListenAddress:
    """Parse ``"host:port"``, ``"[v6]:port"``, ``":port"`` or ``"unix:/path"``.

    Raises:
        ValueError: with a message that says which forms are allowed.
    """
    try:
        return listen_string(text, base or Path.cwd())
    except Bad as exc:
        raise ValueError(exc.message) from None


def listen_string(text: str, base: Path) -> ListenAddress:
    forms = "expected 'host:port', '[ipv6]:port', ':port', 'unix:/path/to.sock' or 'systemd[:name]'"
    if text == "systemd":
        return ListenAddress("systemd")
    if text.startswith("systemd:"):
        if not text[8:]:
            bad(f"{forms}, not {text!r}")
        return ListenAddress("systemd", name=text[8:])
    if text.startswith("unix:"):
        rest = text[5:]
        if not rest:
            bad(f"{forms}, not {text!r}")
        p = Path(os.path.expanduser(rest))
        return ListenAddress("unix", path=p if p.is_absolute() else base / p)
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            bad(f"{forms}, not {text!r}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            bad(f"{host!r} is not an IPv6 address in {text!r}")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            bad(f"{forms}, not {text!r}")
    # isascii: str.isdigit() is also true for non-ASCII digits, some of which int() rejects.
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        bad(f"port must be a number from 0 to 65535 in {text!r}")
    return ListenAddress("tcp", host, int(port_text))
