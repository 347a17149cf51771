"""The keeper: nothing wstrio started outlives it, even when wstrio is SIGKILLed.

wstrio stops what it starts on every path it controls: a ``bin-path``
process is stopped with its whole process group (``kill-signal``, then
SIGKILL), and so is a CGI script.  But a SIGKILL (the OOM killer, ``kill -9``,
a crashed container runtime) gives wstrio no chance to run any of that.
``PR_SET_PDEATHSIG`` makes the kernel kill a direct child then, but it is not
inherited: a ``bin-path`` wrapper script's own children (``#!/bin/sh`` that
runs ``python3 app.py`` without ``exec``) survived, kept the listening socket,
and a restarted wstrio found it taken (issue 13, defect 6).  CGI scripts
cannot have it at all (Trio starts them from a worker thread, whose exit
would fire it).

So a server that starts programs also starts one small watchman process, the
keeper (``python -I -S -c ...``, a few MiB, in its own process group, deaf to
SIGINT/SIGTERM/SIGHUP).  wstrio tells it through a pipe each process group it
starts (``+pgid``) and each one it has stopped (``-pgid``).  When the pipe's
write end closes, the keeper SIGKILLs every group still on its list and
exits.  wstrio closes it last, after its own orderly stop, when the list is
empty; if wstrio is killed, the kernel closes it, and the keeper cleans up.

A process that leaves its group (``setsid``, a daemonising double fork)
escapes the keeper; under systemd, ``KillMode=control-group`` (the default)
catches those too (``docs/deployment.md``).

If the keeper cannot be started, or dies, wstrio logs one warning and goes
on without it (orderly stops still kill the groups).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from typing import final

import trio

__all__ = ["KEEPER_PROGRAM", "Keeper", "has_exited"]

log = logging.getLogger("wstrio.backend")

# Runs with -I -S: no site, no user paths, nothing imported but os and signal.
KEEPER_PROGRAM = """\
import os, signal
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE):
    signal.signal(sig, signal.SIG_IGN)
groups = set()
pending = b""
while True:
    try:
        chunk = os.read(0, 65536)
    except InterruptedError:
        continue
    except OSError:
        break
    if not chunk:
        break
    pending += chunk
    *lines, pending = pending.split(b"\\n")
    for line in lines:
        if line[:1] == b"+":
            groups.add(int(line[1:]))
        elif line[:1] == b"-":
            groups.discard(int(line[1:]))
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
"""


def has_exited(pid: int) -> bool:
    """Whether child ``pid`` has exited, without reaping it.

    Until it is reaped an exited child is a zombie that keeps its pid, which
    for a group leader is also the group id: a signal to the group can never
    reach a stranger given a recycled pid.
    """
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # already reaped
        return True


STOP_WAIT = 15.0
"""How long, at the end, the keeper waits for the orderly stops to empty its list."""


@final
class Keeper:
    """The handle on the keeper process; see the module docstring.

    :meth:`run` is a service (started before anything that spawns); while it
    runs, :meth:`watch` and :meth:`forget` keep the keeper's list.  Both are
    synchronous, never block for long (a line into a pipe the keeper
    drains) and never raise.
    """

    def __init__(self) -> None:
        self._fd: int | None = None
        self.groups: set[int] = set()
        """The process groups wstrio started and has not stopped yet."""
        self._forgot = trio.Event()
        self.pid: int | None = None
        """The keeper's process id while it runs."""

    @property
    def running(self) -> bool:
        return self._fd is not None

    def watch(self, pgid: int) -> None:
        """Add process group ``pgid`` (a child started with ``process_group=0``: its pid)."""
        self.groups.add(pgid)
        self._send(b"+%d\n" % pgid)

    def forget(self, pgid: int) -> None:
        """Remove ``pgid``: its leader is reaped and the group was killed."""
        if pgid not in self.groups:
            return
        self.groups.discard(pgid)
        self._send(b"-%d\n" % pgid)
        self._forgot.set()

    def _send(self, line: bytes) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, line)
        except OSError as exc:
            log.warning("the keeper process is gone (%s): processes will not be killed if wstrio is", exc.strerror)
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the keeper, and keep it until cancelled.

        Cancellation: waits (shielded, at most :data:`STOP_WAIT` s) until
        every group was forgotten (the pools and the reaper stop theirs as
        they are cancelled too), then closes the pipe, so the keeper kills
        what is left, and reaps it.
        """
        process = await self._start()
        task_status.started()
        if process is None:
            return
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(STOP_WAIT):
                    while self.groups:
                        self._forgot = trio.Event()
                        await self._forgot.wait()
                self._close()
                with trio.move_on_after(2.0):
                    await process.wait()
                if process.returncode is None:  # pragma: no cover - it only reads a pipe
                    process.kill()
                    await process.wait()
                self.pid = None

    async def _start(self) -> trio.Process | None:
        read_end, write_end = os.pipe()
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-I", "-S", "-c", KEEPER_PROGRAM, "wstrio-keeper", str(os.getpid())],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
                process_group=0,
            )
        except OSError as exc:
            os.close(write_end)
            log.warning("cannot start the keeper process (%s): processes will not be killed if wstrio is", exc)
            return None
        finally:
            os.close(read_end)
        os.set_blocking(write_end, True)
        self._fd = write_end
        self.pid = process.pid
        for pgid in self.groups:  # started before the keeper was
            self._send(b"+%d\n" % pgid)
        return process
