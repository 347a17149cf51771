"""The ``wstrio`` command: ``serve`` and ``check``.

Exit codes: 0 success (including a clean stop on SIGINT/SIGTERM), 1 invalid
configuration or startup failure, 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import trio

from wstrio._config import ServerConfig
from wstrio._errors import ConfigError, WstrioError
from wstrio._io import systemd
from wstrio._io.accesslog import bare_lines_to
from wstrio._io.grace import force_shutdown
from wstrio._io.http.tls import ReloadableContext, listener_wants_tls
from wstrio._io.preflight import preflight
from wstrio._io.rlimit import nofile_warning, raise_nofile_limit
from wstrio._io.server import Server, serve, serve_worker
from wstrio._io.workers import ConfigText, Supervisor
from wstrio._oneliners import add_oneliner_parsers, oneliner_toml
from wstrio._sansio.config.loader import config_from_text, load_config, read_config_file
from wstrio._version import __version__

__all__ = ["main"]

log = logging.getLogger("wstrio.server")


def _version_line() -> str:
    """``wstrio 0.1.0 (Python 3.11.7; C accelerator: on)``: what ``--version`` says."""
    from wstrio._sansio.websocket import codec

    accelerator = "on" if codec.unmask is not codec.unmask_python else "off (pure Python)"
    python = ".".join(map(str, sys.version_info[:3]))
    return f"wstrio {__version__} (Python {python}; C accelerator: {accelerator})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wstrio",
        description="A Trio WebSocket gateway: terminate WebSockets and tunnel them to backends.",
    )
    parser.add_argument("--version", action="version", version=_version_line())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_p = sub.add_parser("serve", help="run the server described by CONFIG")
    serve_p.add_argument("config", metavar="CONFIG", help="TOML configuration file ('-': standard input)")
    serve_p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (default: info; 'warning' hides the access log)",
    )
    worker_p = sub.add_parser("_worker")  # internal: one worker of workers = N (no help: not for users)
    worker_p.add_argument("config")  # "-": the supervisor writes the text to its stdin
    worker_p.add_argument("--source", default="<stdin>")
    worker_p.add_argument("--base-dir", default=".")
    worker_p.add_argument("--listen-fds", required=True)
    worker_p.add_argument("--log-level", default="info")
    worker_p.add_argument("--worker-number", type=int, default=0)
    worker_p.add_argument("--ready-fd", type=int, default=None)  # written to once the worker listens
    add_oneliner_parsers(sub)
    check_p = sub.add_parser("check", help="validate CONFIG and list every problem")
    check_p.add_argument("config", metavar="CONFIG", help="TOML configuration file ('-': standard input)")
    return parser


def _flatten(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for inner in exc.exceptions:
            out.extend(_flatten(inner))
        return out
    return [exc]


def _reload_certificates(server: Server) -> None:
    """SIGHUP: new certificates for new connections; open ones are kept."""
    systemd.reloading()
    try:
        count = server.reload_certificates()
    except ConfigError as exc:
        log.error("SIGHUP: the new certificate cannot be used; keeping the old one:\n%s", exc)
        systemd.notify("READY=1")
        return
    systemd.notify("READY=1")
    if count:
        log.info("SIGHUP: reloaded the TLS certificate and key; new connections use them")
    else:
        log.info("SIGHUP: no TLS listener, nothing to reload")


def _rereadable(path: str) -> bool:
    """Whether a SIGHUP can read the configuration again (a regular file; not a pipe or stdin)."""
    return path != "-" and Path(path).is_file()


def _reload_failure(exc: BaseException) -> str | None:
    """What to log for a reload that failed with ``exc``, or None: not a reload failure (re-raise)."""
    errors = _flatten(exc)
    if all(isinstance(e, (OSError, WstrioError)) for e in errors):
        return "\n".join(str(e) for e in errors)
    return None


async def _reload_server(server: Server, path: str) -> None:
    """SIGHUP: read the configuration file again and serve it, keeping every open connection.

    An invalid file, or one whose new parts cannot be used (a certificate, an
    address, a ``bin-path`` program), is logged with the file and key, and
    the running configuration stays.
    """
    systemd.reloading()
    try:
        if not _rereadable(path):
            log.info("SIGHUP: the configuration came from a pipe and cannot be read again; re-reading the TLS files")
            _reload_certificates(server)
            return
        try:
            text, source, base_dir = read_config_file(path)
            config = config_from_text(text, source=source, base_dir=base_dir)
        except ConfigError as exc:
            log.error("SIGHUP: the configuration is invalid; the running one stays:\n%s", exc)
            return
        _log_preflight(config)
        try:
            report = await server.reload(config)
        except Exception as exc:
            why = _reload_failure(exc)
            if why is None:
                raise
            log.error("SIGHUP: cannot serve the new configuration; the running one stays:\n%s", why)
            return
        log.info("SIGHUP: reloaded %s: %s", source, report.describe())
        if report.restart_needed:
            changed = ", ".join(report.restart_needed)
            log.warning("SIGHUP: %s changed; it takes effect when wstrio is restarted", changed)
    finally:
        systemd.notify("READY=1")


async def _until_signalled(
    start: Callable[[trio.Nursery], Awaitable[object]],
    *,
    on_hup: Callable[[], Awaitable[None]],
    on_stop: Callable[[str], None],
    on_force: Callable[[str], None],
    on_usr1: Callable[[], None] = lambda: None,
    on_usr2: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Run what ``start`` starts until SIGINT or SIGTERM, then stop it gracefully.

    SIGHUP runs ``on_hup`` in the background, SIGUSR1 calls ``on_usr1``;
    SIGUSR2 (only with ``on_usr2``) runs ``on_usr2`` and then stops as SIGTERM
    does.  The first SIGINT/SIGTERM cancels the run (the graceful shutdown:
    tunnels get CLOSE 1001 and up to ``shutdown-timeout``); a second one
    during it calls ``on_force``: stop waiting and exit now.
    """
    handled = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1]
    if on_usr2 is not None:
        handled.append(signal.SIGUSR2)
    with trio.open_signal_receiver(*handled) as signals:
        async with trio.open_nursery() as outer:
            main = trio.CancelScope()

            async def then_stop(run: Callable[[], Awaitable[None]]) -> None:
                await run()
                main.cancel()

            async def watch() -> None:
                stopping = retiring = False
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if signum == signal.SIGHUP:
                        outer.start_soon(on_hup)
                    elif signum == signal.SIGUSR1:
                        on_usr1()
                    elif signum == signal.SIGUSR2:
                        if on_usr2 is not None and not retiring:
                            retiring = True
                            outer.start_soon(then_stop, on_usr2)
                    elif not stopping:
                        stopping = True
                        on_stop(name)
                        main.cancel()
                    else:
                        on_force(name)

            outer.start_soon(watch)
            with main:
                async with trio.open_nursery() as nursery:
                    await start(nursery)
                    await trio.sleep_forever()
            outer.cancel_scope.cancel()
    return 0


def _reopen_access_log(server: Server) -> None:
    """SIGUSR1: reopen the access-log file (after logrotate moved it)."""
    try:
        reopened = server.reopen_access_log()
    except OSError as exc:
        log.error("SIGUSR1: cannot reopen the access log: %s", exc)
        return
    if reopened:
        log.info("SIGUSR1: reopened the access log")
    else:
        log.info("SIGUSR1: no access-log file configured, nothing to reopen")


def _force(name: str) -> None:
    log.warning("%s again: not waiting for connections to close; exiting now", name)
    force_shutdown()


STATUS_EVERY = 5.0
"""Seconds between two ``STATUS=`` notifications to systemd."""


async def _report_status(server: Server) -> None:
    """``STATUS=`` for ``systemctl status``, when it changed, every :data:`STATUS_EVERY` s."""
    last = ""
    while True:
        stats = server.statistics()
        status = f"STATUS={stats.connections_active} connections, {stats.tunnels_active} WebSockets open"
        if status != last:
            systemd.notify(status)
            last = status
        await trio.sleep(STATUS_EVERY)


async def _serve_until_signalled(config: ServerConfig, path: str) -> int:
    servers: list[Server] = []

    async def start(nursery: trio.Nursery) -> None:
        server = await nursery.start(serve, config)
        servers.append(server)
        where = ", ".join(str(a) for a in server.addresses)
        systemd.notify(f"READY=1\nSTATUS=listening on {where}")
        nursery.start_soon(_report_status, server)

    def on_stop(name: str) -> None:
        systemd.notify("STOPPING=1")
        log.info(
            "%s: closing connections (up to %g s; send it again to exit at once), then exiting",
            name,
            config.shutdown_timeout,
        )

    async def on_hup() -> None:
        for server in servers:
            await _reload_server(server, path)

    def on_usr1() -> None:
        for server in servers:
            _reopen_access_log(server)

    return await _until_signalled(start, on_hup=on_hup, on_stop=on_stop, on_force=_force, on_usr1=on_usr1)


async def _supervise_until_signalled(config: ServerConfig, text: ConfigText, log_level: str, path: str) -> int:
    supervisor = Supervisor(config, text, log_level=log_level)

    async def start(nursery: trio.Nursery) -> None:
        await nursery.start(supervisor.run)
        systemd.notify(f"READY=1\nSTATUS={config.workers} workers")

    async def on_hup() -> None:
        systemd.reloading()
        try:
            if not _rereadable(path):
                log.info("SIGHUP: the configuration came from a pipe; the workers re-read the TLS files only")
                supervisor.signal_workers(signal.SIGHUP)
                return
            try:
                new_text = ConfigText(*read_config_file(path))
                new = config_from_text(new_text.text, source=new_text.source, base_dir=new_text.base_dir)
            except ConfigError as exc:
                log.error("SIGHUP: the configuration is invalid; the running one stays:\n%s", exc)
                return
            if new.workers < 2:
                log.error(
                    "SIGHUP: %s: server.workers: going from %d workers to one process takes a restart;"
                    " the running configuration stays", new.source, supervisor.config.workers,
                )  # fmt: skip
                return
            _log_preflight(new)
            try:
                line = await supervisor.reload(new_text, new)
            except Exception as exc:
                why = _reload_failure(exc)
                if why is None:
                    raise
                log.error("SIGHUP: cannot serve the new configuration; the running one stays:\n%s", why)
                return
            log.info("SIGHUP: reloaded %s: %s", new.source, line)
        finally:
            systemd.notify("READY=1")

    def on_usr1() -> None:
        supervisor.signal_workers(signal.SIGUSR1)

    def on_stop(name: str) -> None:
        systemd.notify("STOPPING=1")
        log.info(
            "%s: stopping %d workers (each closes its connections, up to %g s; send it again to exit at once)",
            name, config.workers, config.shutdown_timeout,
        )  # fmt: skip

    def on_force(name: str) -> None:
        # Each worker took the first SIGTERM; a second one makes it exit at once.
        log.warning("%s again: the workers exit without waiting for their connections", name)
        supervisor.signal_workers(signal.SIGTERM)
        force_shutdown()

    return await _until_signalled(start, on_hup=on_hup, on_stop=on_stop, on_force=on_force, on_usr1=on_usr1)


async def _worker_until_signalled(
    config: ServerConfig, listen_fds: str, ready_fd: int | None = None, number: int = 0
) -> int:
    inherited = []
    for item in listen_fds.split(","):
        fd, *flags = item.split(":")
        inherited.append((int(fd), "tls" in flags, "proxy" in flags))
    servers: list[Server] = []

    async def start(nursery: trio.Nursery) -> None:
        servers.append(await nursery.start(functools.partial(serve_worker, config, inherited, number=number)))
        if ready_fd is not None:  # tell the supervisor this worker listens
            with contextlib.suppress(OSError):
                os.write(ready_fd, b"1")
            os.close(ready_fd)

    async def on_hup() -> None:
        # (Only when the configuration came from a pipe: else the supervisor
        # reloads by starting new workers.)
        for server in servers:
            _reload_certificates(server)

    async def on_usr2() -> None:
        # The supervisor started workers for a new configuration: stop
        # accepting, and exit when the last connection here has ended.
        log.debug("SIGUSR2: finishing the open connections (drain-timeout %g s)", config.drain_timeout)
        for server in servers:
            await server.retire(config.drain_timeout)

    def on_stop(name: str) -> None:
        log.debug("%s: closing connections", name)

    def on_usr1() -> None:
        for server in servers:
            _reopen_access_log(server)

    return await _until_signalled(
        start, on_hup=on_hup, on_stop=on_stop, on_force=_force, on_usr1=on_usr1, on_usr2=on_usr2
    )


def _log_preflight(config: ServerConfig) -> None:
    """Log what the files the configuration names will break (``wstrio check`` lists the same)."""
    found = preflight(config)
    for key, message in found.problems:
        log.error("%s: %s: %s", config.source, key, message)
    for key, message in found.warnings:
        log.warning("%s: %s: %s", config.source, key, message)


def _open_file_limit(config: ServerConfig) -> None:
    """Raise the soft open-file limit to the hard one; warn once if it is still too low."""
    raised = raise_nofile_limit()
    if raised is not None:
        log.debug("raised the open-file limit from %d to %d", *raised)
    warning = nofile_warning(config)
    if warning is not None:
        log.warning("%s", warning)


def _hint(error: BaseException) -> str:
    """What to do about a start-up error, when wstrio can tell."""
    if isinstance(error, PermissionError) and (port := re.search(r"cannot listen on .*:(\d+):", str(error))):
        if int(port.group(1)) < 1024:
            return (
                "\n  ports below 1024 need root or CAP_NET_BIND_SERVICE: under systemd,"
                " AmbientCapabilities=CAP_NET_BIND_SERVICE; by hand,"
                ' sudo setcap cap_net_bind_service=+ep "$(readlink -f "$(command -v python3)")";'
                " or listen on a port >= 1024 behind a proxy (docs/deployment.md)"
            )
    return ""


def _check(path: str) -> int:
    if path == "-":
        path = "<stdin>"
        config_path = "-"
    else:
        config_path = path
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        n = len(exc.problems)
        print(f"{path}: {n} problem{'s' if n != 1 else ''}:", file=sys.stderr)
        for key, message in exc.problems:
            print(f"  {key}: {message}" if key else f"  {message}", file=sys.stderr)
        return 1
    if any(listener_wants_tls(config, address.tls) for address in config.listen):
        # The loader only checks the shape; load the certificate and key
        # the way serve() will, so a wrong file is found here.
        try:
            ReloadableContext.from_config(config)
        except ConfigError as exc:
            print(f"{path}: {len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}:", file=sys.stderr)
            for key, message in exc.problems:
                print(f"  {key}: {message}", file=sys.stderr)
            return 1
    found = preflight(config)
    if found.problems:
        n = len(found.problems)
        print(f"{path}: {n} problem{'s' if n != 1 else ''}:", file=sys.stderr)
        for key, message in found.problems:
            print(f"  {key}: {message}", file=sys.stderr)
    for key, message in found.warnings:
        print(f"{path}: warning: {key}: {message}", file=sys.stderr)
    raise_nofile_limit()  # as 'wstrio serve' will, so the warning is about the limit it will have
    warning = nofile_warning(config)
    if warning is not None:
        print(f"{path}: warning: {warning}", file=sys.stderr)
    if found.problems:
        return 1
    routes = len(config.routes)
    listen = ", ".join(str(a) for a in config.listen)
    print(f"{path}: OK ({routes} route{'s' if routes != 1 else ''}; listens on {listen})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args.config)
    if args.command in ("run", "tunnel"):
        try:
            toml = oneliner_toml(args, argv)
            config_from_text(toml, source=f"<wstrio {args.command}>", base_dir=Path.cwd())
        except ValueError as exc:  # (a ConfigError is one too: the same validation as a file)
            print(f"wstrio {args.command}: {exc}", file=sys.stderr)
            return 2
        if args.print_config:
            print(toml, end="")
            return 0
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        if args.command == "_worker":
            text = ConfigText(sys.stdin.read(), args.source, Path(args.base_dir))
        elif args.command in ("run", "tunnel"):
            text = ConfigText(oneliner_toml(args, argv), f"<wstrio {args.command}>", Path.cwd())
        else:
            systemd.take_notify_socket()  # ours alone: not the workers', nor the backends'
            systemd.inherited_sockets()  # and the LISTEN_* variables, before anything is started
            text = ConfigText(*read_config_file(args.config))  # read once: it may be a pipe
        config = config_from_text(text.text, source=text.source, base_dir=text.base_dir)
        if config.access_log_format == "json" and config.access_log is None:
            # JSON lines on stderr bare (no time/name/level in front), so that
            # each access line stays one JSON object.
            bare_lines_to(sys.stderr)
        _open_file_limit(config)
        if args.command != "_worker":
            _log_preflight(config)  # once, not again in every worker
        if args.command == "_worker":
            logging.getLogger().handlers[0].setFormatter(
                logging.Formatter(f"%(asctime)s %(name)s[{args.worker_number}] %(levelname)s %(message)s")
            )
            return trio.run(_worker_until_signalled, config, args.listen_fds, args.ready_fd, args.worker_number)
        if config.workers > 1:
            return trio.run(_supervise_until_signalled, config, text, args.log_level, args.config)
        return trio.run(_serve_until_signalled, config, getattr(args, "config", "-"))
    except ConfigError as exc:
        print(f"wstrio: invalid configuration:\n{exc}", file=sys.stderr)
        return 1
    except BaseException as exc:
        errors = _flatten(exc)
        known = [e for e in errors if isinstance(e, (OSError, WstrioError))]
        if known and len(known) == len(errors):
            for e in known:
                print(f"wstrio: {e}{_hint(e)}", file=sys.stderr)
            return 1
        if all(isinstance(e, KeyboardInterrupt) for e in errors):
            return 0
        raise
