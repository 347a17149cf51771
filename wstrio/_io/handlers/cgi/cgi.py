"""The ``cgi`` handler: run scripts under ``document-root`` (CGI/1.1, RFC 3875).

What is CGI-specific lives here: finding the script, choosing how to run it,
and the life of its process.  The exchange itself (environment, body,
response head, upgrade) is :func:`wstrio._io.handlers.cgi.common.serve_program`.

* **Which file.**  The URL path is walked from the left
  (:func:`~wstrio._io.handlers.cgi.locate.locate_script`); the first prefix that is a
  regular file under the document root is the script, the rest is
  ``PATH_INFO``.  A file whose real path (symbolic links resolved) lies
  outside the root is refused (403).  A path naming no file, or a file no
  ``assign`` suffix covers, is served as a static file, as lighttpd's
  mod_staticfile would after mod_cgi declines it.
* **How.**  ``assign`` maps file-name suffixes to interpreters; the longest
  matching suffix wins and ``""`` matches everything.  An empty interpreter
  runs the file itself, which must be executable (403 otherwise); with
  ``execute-x-only`` interpreted scripts must be executable too.  No
  ``assign`` at all means ``{"" = ""}``.
* **Environment.**  The CGI/1.1 variables, plus ``PATH`` =
  :data:`DEFAULT_PATH` (lighttpd passes none; a ``#!/usr/bin/env python3``
  script such as the seed's ``ws_echo.py`` needs one, and wstrio's own
  ``PATH`` would leak its virtualenv), ``LD_PRELOAD`` and
  ``LD_LIBRARY_PATH`` if wstrio has them (as lighttpd), and the route's
  ``environment`` last.
* **Process.**  The script runs in its own directory and its own process
  group, with pipes for stdin, stdout and stderr; stderr lines go to the
  ``wstrio.backend`` log.  When the exchange is over its stdin and stdout
  are closed and it gets :data:`STOP_GRACE` seconds to exit (none when the
  exchange failed), then SIGTERM for the group, :data:`STOP_GRACE` seconds
  more, and SIGKILL for whatever is left of the group.  When the script
  exits on its own, what it left in its group gets SIGTERM (then SIGKILL):
  a background job holding stdout would otherwise keep the response open.
  A script still running when the exchange is over is stopped this way in
  the background (the server's :class:`~wstrio._io.reaper.Reaper`), so the
  answer and the next request never wait for it; so no process of a
  request outlives it by more than about ``2 * STOP_GRACE + 2`` s.  (wstrio does not use
  ``PR_SET_PDEATHSIG`` here: :func:`trio.lowlevel.open_process` forks from a
  worker thread, whose exit would fire it.  If wstrio is SIGKILLed, the
  server's :class:`~wstrio._io.keeper.Keeper` kills every script's group.)
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import shlex
import signal
import subprocess
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import trio

from wstrio._config import Route
from wstrio._errors import HttpError
from wstrio._io.handlers.cgi.common import ProgramChannel, refuse, serve_program
from wstrio._io.handlers.cgi.locate import locate_script
from wstrio._io.handlers.cgi.stderr import StderrLog
from wstrio._io.http.exchange import Exchange
from wstrio._io.keeper import Keeper, has_exited
from wstrio._io.reaper import Reaper
from wstrio._io.streams.pipes import BROKEN, READ_SIZE

if TYPE_CHECKING:
    from wstrio._io.context import RouteMatch, ServerContext

__all__ = ["DEFAULT_PATH", "STOP_GRACE", "handle", "interpreter_for", "open_script"]

log = logging.getLogger("wstrio.backend")

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
"""``PATH`` in a script's environment unless the route's ``environment`` sets one."""
STOP_GRACE = 2.0
"""Seconds a finished script gets to exit on its own, and again after SIGTERM."""


def interpreter_for(assign: Sequence[tuple[str, str]], filename: str) -> str | None:
    """The interpreter ``assign`` names for ``filename``.

    Args:
        assign: the route's ``(suffix, interpreter)`` pairs.
        filename: the script's path.

    Returns:
        the interpreter; ``""`` to execute the file itself (also when
        ``assign`` is empty); ``None`` when no suffix matches.
    """
    if not assign:
        return ""
    best: tuple[int, str] | None = None
    for suffix, interpreter in assign:
        if filename.endswith(suffix) and (best is None or len(suffix) > best[0]):
            best = (len(suffix), interpreter)
    return None if best is None else best[1]


def _environment(route: Route) -> dict[str, str]:
    extra = {"PATH": DEFAULT_PATH}
    for name in ("LD_PRELOAD", "LD_LIBRARY_PATH"):
        if name in os.environ:
            extra[name] = os.environ[name]
    extra.update(route.environment)
    return extra


def _pidfd(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except OSError:  # pragma: no cover - Linux < 5.3: poll instead
        return -1


class _Script:
    """A running script: its stderr logger, its exit watcher and its orderly end.

    The script's exit is watched through pidfds of our own (one for the
    watcher task, one for :meth:`stop`, which must not depend on a task that
    may already be cancelled), and the script is reaped
    (:meth:`trio.Process.wait`) only at the very end.  Until then a script
    that exited is a zombie that keeps its pid, which is also its process
    group id, so signals to the group can never reach a stranger that was
    given a recycled pid.
    """

    def __init__(
        self, process: trio.Process, name: str, reaper: Reaper | None = None, keeper: Keeper | None = None
    ) -> None:
        self.process = process
        self.name = name
        self.reaper = reaper
        self.keeper = keeper
        self.watch_fd = _pidfd(process.pid)
        self.stop_fd = _pidfd(process.pid)
        self.stderr_done = trio.Event()
        self.background_started = False
        self.background_done = trio.Event()
        self.stopped = False
        self.handed_off = False
        """Stopping continues in the reaper, which then also closes the pidfds and stderr."""

    async def close_input(self) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.aclose()

    async def run_background(self) -> None:
        self.background_started = True
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._log_stderr)
                nursery.start_soon(self._watch_exit)
        finally:
            self.background_done.set()

    async def _log_stderr(self) -> None:
        assert self.process.stderr is not None
        lines = StderrLog(self.name)
        try:
            while data := await self.process.stderr.receive_some(READ_SIZE):
                lines.feed(bytes(data))
        except BROKEN:
            pass
        finally:
            lines.flush()
            self.stderr_done.set()

    async def _watch_exit(self) -> None:
        await self._wait_exit(self.watch_fd)
        # The script is done.  Whatever it left running in its group (a
        # background job that inherited stdout, say) would keep the
        # response open forever: the request ends with the script.
        self._signal(signal.SIGTERM)
        await trio.sleep(STOP_GRACE)
        self._signal(signal.SIGKILL)

    async def _wait_exit(self, fd: int) -> None:
        """Return once the script has exited, without reaping it."""
        if fd >= 0:
            await trio.lowlevel.wait_readable(fd)
            return
        while not self._exited():  # noqa: ASYNC110  # pragma: no cover - no pidfd to wait on
            await trio.sleep(0.05)

    def _exited(self) -> bool:
        return has_exited(self.process.pid)

    def _signal(self, sig: int) -> None:
        # The script leads its own process group (process_group=0), so the
        # group id is its pid, which stays reserved until we reap it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    async def stop(self, aborted: bool) -> None:
        """End the script: EOF, a grace period unless ``aborted``, SIGTERM, SIGKILL.

        A script that has exited is reaped here, at once.  One that is still
        running (it answered but lingers, or ignores SIGTERM) is stopped in
        the background by the server's reaper, so that neither the answer
        (a 504, say) nor the client's next request waits for it; without a
        reaper it is stopped here.

        Cancellation: shielded, bounded by about ``2 * STOP_GRACE + 2`` s.
        """
        if self.stopped:
            return
        self.stopped = True
        process = self.process
        with trio.CancelScope(shield=True):
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    await trio.aclose_forcefully(pipe)
        if not self._exited() and self.reaper is not None:
            self.handed_off = self.reaper.start_soon(functools.partial(self._end_in_background, aborted))
            if self.handed_off:
                return
        await self._end(aborted, shield=True)

    async def _end_in_background(self, aborted: bool) -> None:
        try:
            await self._end(aborted, shield=False, background=True)
        finally:
            self.close_fds()
            if self.process.stderr is not None:
                await trio.aclose_forcefully(self.process.stderr)

    async def _end(self, aborted: bool, *, shield: bool, background: bool = False) -> None:
        process = self.process
        signalled = None
        try:
            with trio.move_on_after(2 * STOP_GRACE + 2, shield=shield):
                if not aborted:
                    with trio.move_on_after(STOP_GRACE):
                        await self._wait_exit(self.stop_fd)
                if not self._exited():
                    signalled = "SIGTERM"
                    self._signal(signal.SIGTERM)
                    with trio.move_on_after(STOP_GRACE):
                        await self._wait_exit(self.stop_fd)
                if not self._exited():
                    signalled = "SIGKILL"
        finally:
            with trio.CancelScope(shield=True):
                # The leader if it still runs, and anything left in its group
                # (at once when the server shuts down and cancels the reaper).
                self._signal(signal.SIGKILL)
                if self.keeper is not None:
                    self.keeper.forget(process.pid)
                if background and self.background_started:
                    # The request's own tasks signal the group too: they must
                    # be over before the pid (the group id) is given back.
                    with trio.move_on_after(1.0):
                        await self.background_done.wait()
                await process.wait()
                with trio.move_on_after(1.0):
                    await self.stderr_done.wait()
        status = process.returncode
        if signalled is not None:
            log.info("%s: stopped with %s (exit status %s)", self.name, signalled, status)
        elif status:
            log.info("%s: exited with status %d", self.name, status)

    def close_fds(self) -> None:
        """Close the pidfds (once no task waits on them any more)."""
        for fd in (self.watch_fd, self.stop_fd):
            if fd >= 0:
                trio.lowlevel.notify_closing(fd)
                os.close(fd)
        self.watch_fd = self.stop_fd = -1


@contextlib.asynccontextmanager
async def open_script(
    argv: Sequence[str],
    environ: dict[str, str],
    *,
    label: str,
    read_timeout: float,
    write_timeout: float,
    reaper: Reaper | None = None,
    keeper: Keeper | None = None,
) -> AsyncIterator[ProgramChannel]:
    """Start a script with ``environ`` and present it as a program channel.

    The script runs in the directory of ``argv[-1]`` (the script file), in a
    process group of its own, with stdin, stdout and stderr on pipes.

    Args:
        argv: the script, or its interpreter and the script.
        environ: the complete environment.
        label: the script's name for logs (its pid is added).
        read_timeout: seconds the script may stay silent (0 = no limit).
        write_timeout: seconds a write to its stdin may stall (0 = no limit).
        reaper: where a script that outlives its answer is stopped and
            reaped in the background (``None``: here, before returning).
        keeper: told of the script's process group while it may run, so
            that it is killed even if wstrio is SIGKILLed.

    Yields:
        the channel; the process is stopped (see :class:`_Script`) by the
        channel's ``finish`` or, at the latest, on exit.

    Raises:
        HttpError: the script cannot be started (403 for a
            permission error, 500 otherwise).

    Cancellation: on exit the process group is killed, shielded and
    bounded.

    Resource handling: the pipes are closed and the process reaped on exit,
    or, for a script still running then, by ``reaper`` within about
    ``2 * STOP_GRACE + 2`` s.

    Error handling: only start-up failures raise; the process's exit status
    is logged to ``wstrio.backend``.
    """
    cwd = os.path.dirname(argv[-1]) or None
    try:
        process = await trio.lowlevel.open_process(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=environ,
            process_group=0,
        )
    except OSError as exc:
        status = 403 if exc.errno in (errno.EACCES, errno.EPERM) else 500
        msg = f"cannot run {shlex.join(argv)}: {exc.strerror or exc}"
        raise HttpError(msg, status) from exc
    assert process.stdin is not None
    assert process.stdout is not None
    if keeper is not None:
        keeper.watch(process.pid)
    script = _Script(process, f"cgi {label} (pid {process.pid})", reaper, keeper)
    try:
        yield ProgramChannel(
            trio.StapledStream(process.stdin, process.stdout),
            name=script.name,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
            end_body=script.close_input,
            background=script.run_background,
            finish=script.stop,
        )
    finally:
        await script.stop(True)
        if not script.handed_off:
            # The background tasks are over by now (serve_program cancels
            # them after finish()), so nothing waits on the pidfds.
            script.close_fds()
            if process.stderr is not None:
                await trio.aclose_forcefully(process.stderr)


async def handle(exchange: Exchange, match: RouteMatch, ctx: ServerContext) -> None:
    """Answer one request on a ``cgi`` route (see the module docstring).

    A path that names no script is declined (:meth:`ServerContext.decline
    <wstrio._io.context.ServerContext.decline>`): the static files answer
    it, as lighttpd's mod_staticfile after mod_cgi.

    Args:
        exchange: the client's request and response.
        match: the cgi route that matched.
        ctx: the server (settings, document root, dispatcher for local
            redirects and declined requests).

    Cancellation: the script's process group is stopped (shielded, within
    a few seconds) and :class:`trio.Cancelled` propagates.

    Resource handling: no process of the request outlives this call.

    Error handling: 404/403 for what cannot be run, the rest as
    :func:`~wstrio._io.handlers.cgi.common.serve_program`; only
    :class:`~wstrio._errors.ClientGone` propagates.
    """
    request = exchange.request
    route, real_root = match.route, ctx.real_root
    if real_root is None:  # the config loader requires document-root for cgi routes
        await refuse(exchange, "a cgi route needs server.document-root", 404)
        return
    try:
        target = locate_script(real_root, request.path)
    except HttpError as exc:
        await refuse(exchange, str(exc), exc.status)
        return
    interpreter = None
    if target is not None:
        assert target.script_filename is not None
        interpreter = interpreter_for(route.assign, target.script_filename)
    if target is None or interpreter is None:
        # Not a script: what the static files make of it (404, a
        # directory's index file, ...), as lighttpd does.
        await ctx.decline(exchange)
        return
    filename = target.script_filename
    assert filename is not None
    if (not interpreter or route.execute_x_only) and not os.access(filename, os.X_OK):
        await refuse(exchange, f"{target.script_name} is not executable (chmod +x)", 403)
        return
    argv = [interpreter, filename] if interpreter else [filename]
    exchange.set_log_note(f"cgi {target.script_name}")
    opener = functools.partial(
        open_script,
        argv,
        label=target.script_name,
        read_timeout=route.read_timeout,
        write_timeout=route.write_timeout,
        reaper=ctx.reaper,
        keeper=ctx.keeper,
    )
    await serve_program(exchange, match, ctx, target, opener, extra_environ=_environment(route))
