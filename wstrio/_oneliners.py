"""``wstrio run`` and ``wstrio tunnel``: a whole configuration from one command line.

Each builds the TOML text a user would write (``--print-config`` prints it,
so the command can grow into a file) and serves it through the same loader
and the same runtime as ``wstrio serve``:

* ``wstrio run -- PROGRAM [ARGS...]`` (websocketd): a ``process`` route on
  every path, one program per WebSocket, one line per message;
* ``wstrio tunnel TARGET`` (websockify): a ``wstunnel`` route on every path
  to ``host:port`` or ``unix:/path``, binary frames (what noVNC needs).

``--static DIR`` / ``--web DIR`` serve files for plain requests (a
``process`` or ``wstunnel`` route takes only WebSocket handshakes).
"""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Sequence

__all__ = ["add_oneliner_parsers", "oneliner_toml"]


def _q(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value, ensure_ascii=False)


def _array(values: Sequence[str]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def _common(parser: argparse.ArgumentParser, default_listen: str) -> None:
    parser.add_argument(
        "--listen", default=default_listen, metavar="HOST:PORT",
        help=f"address to listen on (default {default_listen}; ':PORT' for every interface)",
    )  # fmt: skip
    parser.add_argument("--origin", action="append", default=[], metavar="ORIGIN", help="allowed Origin (repeatable)")
    parser.add_argument("--print-config", action="store_true", help="print the equivalent TOML and exit")
    parser.add_argument(
        "--devconsole", action="store_true", help="a page to try the WebSocket from a browser (loopback clients only)"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="log level (default info)"
    )


def add_oneliner_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``run`` and ``tunnel`` to the ``wstrio`` command's subcommands."""
    run = sub.add_parser(
        "run",
        help="one program per WebSocket, its stdin/stdout bridged (websocketd)",
        description="Run PROGRAM once per WebSocket: each message from the client is a line on its standard"
        " input, each line it writes is a message.  Example: wstrio run --listen :8080 -- ./count.sh",
    )
    _common(run, "127.0.0.1:8080")
    run.add_argument("--static", metavar="DIR", help="serve files from DIR to plain (non-WebSocket) requests")
    run.add_argument("--binary", action="store_true", help="binary frames to the client (default: text)")
    run.add_argument(
        "--framing", default="lines", choices=["lines", "nul", "length-prefixed", "stream"],
        help="how messages map to the program's bytes (default: lines)",
    )  # fmt: skip
    run.add_argument("--max-processes", type=int, default=0, metavar="N", help="programs at once (default: no limit)")
    run.add_argument("--path", default="/", help="the URL path prefix it answers (default: /, every path)")
    run.add_argument("program", nargs=argparse.REMAINDER, metavar="-- PROGRAM [ARGS...]")
    tunnel = sub.add_parser(
        "tunnel",
        help="tunnel WebSockets to a TCP or unix-socket server (websockify)",
        description="Tunnel every WebSocket to TARGET (host:port or unix:/path), binary frames by default."
        "  Example: wstrio tunnel --listen :6080 --web /usr/share/novnc localhost:5900",
    )
    _common(tunnel, "127.0.0.1:6080")
    tunnel.add_argument("--web", metavar="DIR", help="serve files from DIR to plain requests (noVNC's pages)")
    frames = tunnel.add_mutually_exclusive_group()
    frames.add_argument("--binary", action="store_true", default=True, help="binary frames (the default)")
    frames.add_argument("--text", dest="binary", action="store_false", help="text frames")
    tunnel.add_argument("--path", default="/", help="the URL path prefix it answers (default: /, every path)")
    tunnel.add_argument("target", metavar="TARGET", help="host:port or unix:/path/to.sock")


def _listen(text: str) -> str:
    return f"0.0.0.0{text}" if text.startswith(":") else text


def _target(text: str) -> list[str]:
    """The ``[[route.backend]]`` lines for ``host:port`` or ``unix:/path``.

    Raises:
        ValueError: neither form.
    """
    if text.startswith("unix:"):
        if not text[5:]:
            msg = f"TARGET must be host:port or unix:/path, not {text!r}"
            raise ValueError(msg)
        return [f"socket = {_q(text[5:])}"]
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        msg = f"TARGET must be host:port or unix:/path, not {text!r}"
        raise ValueError(msg)
    host = host.strip("[]") or "127.0.0.1"
    return [f"host = {_q(host)}", f"port = {int(port)}"]


def oneliner_toml(args: argparse.Namespace, argv: Sequence[str]) -> str:
    """The configuration a ``run`` or ``tunnel`` command line stands for, as TOML.

    Raises:
        ValueError: the command line lacks what it needs (with what to do).
    """
    shown = [a for a in argv if a != "--print-config"]
    lines = ["# Made by: wstrio " + " ".join(shlex.quote(a) for a in shown), "", "[server]"]
    lines.append(f"listen = [{_q(_listen(args.listen))}]")
    static = args.static if args.command == "run" else args.web
    if static:
        lines.append(f"document-root = {_q(static)}")
    if args.devconsole:
        lines.append("devconsole = true")
    lines += ["", "[[route]]", f"path = {_q(args.path)}"]
    if args.command == "run":
        program = list(args.program)
        if program and program[0] == "--":
            program = program[1:]
        if not program:
            msg = "wstrio run needs the program to run: wstrio run [OPTIONS] -- PROGRAM [ARGS...]"
            raise ValueError(msg)
        lines += ['handler = "process"', f"command = {_array(program)}"]
        if args.framing != "lines":
            lines.append(f"framing = {_q(args.framing)}")
        if args.max_processes:
            lines.append(f"max-processes = {args.max_processes}")
    else:
        backend = _target(args.target)
        lines.append('handler = "wstunnel"')
    if args.binary:
        lines.append('frame-type = "binary"')
    if args.origin:
        lines.append(f"origins = {_array(args.origin)}")
    if args.command == "tunnel":
        lines += ["", "  [[route.backend]]", *("  " + line for line in backend)]
    return "\n".join(lines) + "\n"
