"""Spawned backends: lighttpd's ``bin-path``.

wstrio creates each process's listening socket itself (unix ``<socket>-<id>``
or TCP ``port + id``), and starts the program with that socket as its
standard input (fd 0), the FastCGI convention that the seed's ``echo.pl``
relies on (``accept($FH, STDIN)``).  The working directory is the program's
directory, as in lighttpd.

Children never outlive wstrio:

* each child runs in its own process group (so a Ctrl-C in the terminal
  reaches wstrio only, which then shuts down in order), and is stopped with
  ``kill-signal`` (SIGTERM), then SIGKILL after a grace period;
* on Linux each child also gets ``PR_SET_PDEATHSIG`` = SIGKILL, so if wstrio
  itself is SIGKILLed the kernel kills the child at once and its socket goes
  with it.  The process is started from the main thread (trio would start it
  from a worker thread, whose exit would fire the death signal early).
  The death signal is not inherited: the child's own children (a wrapper
  script's) are killed then by the server's :class:`~wstrio._io.keeper.Keeper`;
* a process that exits on its own is not restarted before whatever it left
  in its group is gone (``kill-signal``, SIGKILL a second later), so a
  wrapper's orphan never keeps the socket and runs on unsupervised;
* something already listening at a process's address is an error, never
  adopted (lighttpd adopts it, and then never supervises or restarts it).

Exits are watched with a pidfd (Linux >= 5.3), so no SIGCHLD handler and no
polling.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import final

import trio

from wstrio._config import Backend
from wstrio._errors import BackendExited
from wstrio._io.keeper import Keeper, has_exited
from wstrio._sansio.backends.address import BackendAddress, backend_address

__all__ = ["SpawnedProcess", "make_preexec", "spawn_backend"]

log = logging.getLogger("wstrio.backend")

_PR_SET_PDEATHSIG = 1


def make_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` that gives the child ``PR_SET_PDEATHSIG`` = SIGKILL (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:  # runs in the child between fork and exec
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork and prctl: then we are
        # already orphaned and no signal will come.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def _already_listening(addr: BackendAddress) -> bool:
    with socket.socket(addr.family, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(addr.address)
        except OSError:
            return False
        return True


def _listening_socket(addr: BackendAddress, backlog: int) -> socket.socket:
    sock = socket.socket(addr.family, socket.SOCK_STREAM)
    try:
        if addr.family == socket.AF_UNIX:
            assert isinstance(addr.address, str)
            # A socket file left by an earlier run: nothing answered on it
            # (we checked), so it is stale.  Refuse to delete anything else.
            with contextlib.suppress(FileNotFoundError):
                if not stat.S_ISSOCK(os.lstat(addr.address).st_mode):
                    msg = f"{addr.address} exists and is not a socket; refusing to replace it"
                    raise BackendExited(msg)
                os.unlink(addr.address)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr.address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _environment(backend: Backend) -> dict[str, str]:
    # lighttpd: with bin-copy-environment empty, the whole environment is
    # passed; otherwise only the named variables.  Unlike lighttpd we do not
    # inject PHP_FCGI_CHILDREN=1.
    if backend.bin_copy_environment:
        env = {k: os.environ[k] for k in backend.bin_copy_environment if k in os.environ}
    else:
        env = dict(os.environ)
    env.update(backend.bin_environment)
    return env


@final
class SpawnedProcess:
    """One running child of a ``bin-path`` backend, the leader of its own process group.

    Created by :func:`spawn_backend`; :meth:`wait` returns when it exits
    (and whatever it left running in its group is gone), :meth:`stop` ends
    it and its group (kill-signal, then SIGKILL).

    The leader is reaped only once its group has been killed: until then an
    exited leader is a zombie that keeps its pid, which is the group id, so a
    signal to the group can never reach a stranger given a recycled pid.
    """

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        address: BackendAddress | None,
        kill_signal: int,
        keeper: Keeper | None = None,
    ) -> None:
        self.popen = popen
        self.address = address
        self.kill_signal = kill_signal
        self.keeper = keeper
        self._pidfd: int | None = None
        with contextlib.suppress(OSError, AttributeError):
            self._pidfd = os.pidfd_open(popen.pid)
        if keeper is not None:
            keeper.watch(popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def exited(self) -> bool:
        """Whether the leader has exited (without reaping it)."""
        return self.popen.returncode is not None or has_exited(self.pid)

    async def _wait_exit(self) -> None:
        if self._pidfd is not None:
            await trio.lowlevel.wait_readable(self._pidfd)
            return
        while not self.exited():  # noqa: ASYNC110  # pragma: no cover - kernels without pidfd: poll
            await trio.sleep(0.05)

    async def wait(self) -> int:
        """Wait for the process to exit; end what it left in its group; reap it; return its status.

        Whatever the leader left running in its group (a wrapper script's
        child, holding the listening socket) gets ``kill-signal``, and
        SIGKILL if it is still there after a second: a restarted process
        must not find its socket taken, and nothing runs unsupervised.
        """
        await self._wait_exit()
        with trio.CancelScope(shield=True):
            await self._end_group(LEFTOVER_GRACE)
        return self._reap()

    async def stop(self, grace: float = 5.0) -> int:
        """Send ``kill-signal`` to the process group, SIGKILL after ``grace`` s.

        The rest of the group gets what is left of ``grace`` once the leader
        has exited, then SIGKILL too.

        Cancellation: shielded internally, bounded by ``grace`` + 1 s.
        """
        deadline = trio.current_time() + grace
        with trio.CancelScope(shield=True):
            if not self.exited():
                self._signal_group(self.kill_signal)
                with trio.move_on_after(grace):
                    await self._wait_exit()
                if not self.exited():
                    log.warning("backend pid %d ignored signal %d; killing it", self.pid, self.kill_signal)
                    await self._end_group(0)
                    return self._reap()
            await self._end_group(max(0.0, deadline - trio.current_time()))
        return self._reap()

    async def _end_group(self, grace: float) -> None:
        """With the leader exited: give the rest of its group ``grace`` s after ``kill-signal``, then SIGKILL."""
        if grace and _group_has_others(self.pid):
            self._signal_group(self.kill_signal)
            with trio.move_on_after(grace):
                while _group_has_others(self.pid):  # noqa: ASYNC110 - no event for "a group is empty"
                    await trio.sleep(0.05)
        self._signal_group(signal.SIGKILL)
        if not self.exited():
            with trio.move_on_after(1.0):
                await self._wait_exit()

    def _reap(self) -> int:
        """Forget the group (it was killed) and reap the leader if it exited."""
        if self.keeper is not None:
            self.keeper.forget(self.pid)
        if self.popen.returncode is None and self.exited():
            self.popen.wait()
        self._close_pidfd()
        return self.popen.returncode if self.popen.returncode is not None else -signal.SIGKILL

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            fd, self._pidfd = self._pidfd, None
            with contextlib.suppress(OSError):
                trio.lowlevel.notify_closing(fd)
            os.close(fd)

    def _signal_group(self, sig: int) -> None:
        # The group outlives its leader: signal it even when the leader has
        # exited (its pid, the group id, is ours until we reap it).
        if self.popen.returncode is not None:
            return
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:  # pragma: no cover - a member changed its credentials
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, sig)

    def cleanup_socket(self) -> None:
        """Remove the unix socket file once the process is gone."""
        if self.address is not None and isinstance(self.address.address, str):
            with contextlib.suppress(OSError):
                os.unlink(self.address.address)


LEFTOVER_GRACE = 1.0
"""Seconds what an exited process left in its group gets after ``kill-signal``, before SIGKILL."""


def _group_has_others(pgid: int) -> bool:
    """Whether a process other than the leader is in process group ``pgid`` (Linux ``/proc``; else False)."""
    try:
        entries = os.listdir("/proc")
    except OSError:  # pragma: no cover - no /proc: SIGKILL at once
        return False
    for entry in entries:
        if not entry.isdigit() or int(entry) == pgid:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat_line = f.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        fields = stat_line[stat_line.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == pgid:
            return True
    return False


def _listener_inodes(addr: BackendAddress) -> set[str]:
    """The socket inodes listening at ``addr`` (Linux ``/proc/net``; empty elsewhere)."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        if addr.family == socket.AF_UNIX:
            assert isinstance(addr.address, str)
            want = {addr.address, os.path.abspath(addr.address)}
            with open("/proc/net/unix") as f:
                next(f)
                for line in f:
                    parts = line.split(None, 7)
                    # Flags 00010000: __SO_ACCEPTCON, a listening socket.
                    if len(parts) == 8 and parts[7].strip() in want and int(parts[3], 16) & 0x10000:
                        inodes.add(parts[6])
        else:
            port = int(addr.address[1])
            for table in ("/proc/net/tcp", "/proc/net/tcp6"):
                with contextlib.suppress(OSError), open(table) as f:
                    next(f)
                    for line in f:
                        parts = line.split()
                        if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                            inodes.add(parts[9])
    return inodes


def _holders(addr: BackendAddress) -> list[str]:
    """``pid (name)`` of each process holding a listening socket at ``addr``, as far as we may look."""
    inodes = _listener_inodes(addr)
    if not inodes:
        return []
    links = {f"socket:[{inode}]" for inode in inodes}
    found: list[str] = []
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fds = os.listdir(f"/proc/{entry}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    link = os.readlink(f"/proc/{entry}/fd/{fd}")
                except OSError:
                    continue
                if link in links:
                    try:
                        with open(f"/proc/{entry}/comm") as f:
                            name = f.read().strip()
                    except OSError:
                        name = "?"
                    found.append(f"pid {entry} ({name})")
                    break
    return found


def spawn_backend(backend: Backend, index: int, keeper: Keeper | None = None) -> SpawnedProcess:
    """Start process ``index`` of a ``bin-path`` backend.

    Something already listening at the address is an error: wstrio never
    adopts a listener it did not start (lighttpd does, and then neither
    supervises nor restarts it; an orphan of an earlier run, say).

    Raises:
        BackendExited: the address is taken, or the program cannot be
            started (with the reason).
    """
    addr = backend_address(backend, index)
    if _already_listening(addr):
        holders = _holders(addr)
        by = f" by {', '.join(holders)}" if holders else ""
        other = "socket" if addr.family == socket.AF_UNIX else "port"
        msg = (
            f"{addr} is already in use{by}: wstrio does not adopt a listener it did not start "
            f"for a bin-path backend (it could neither supervise nor restart it); "
            f"stop that program, or give {backend.name} another {other}"
        )
        raise BackendExited(msg)
    try:
        sock = _listening_socket(addr, backend.listen_backlog)
    except OSError as exc:
        msg = f"cannot listen at {addr} for {backend.bin_path[0]}: {exc.strerror or exc}"
        raise BackendExited(msg) from exc
    program = backend.bin_path[0]
    try:
        popen = subprocess.Popen(
            list(backend.bin_path),
            stdin=sock.fileno(),
            stdout=None,
            stderr=None,
            cwd=os.path.dirname(program) or None,
            env=_environment(backend),
            close_fds=True,
            process_group=0,
            preexec_fn=make_preexec(),
            restore_signals=True,
        )
    except OSError as exc:
        if isinstance(addr.address, str):
            with contextlib.suppress(OSError):
                os.unlink(addr.address)
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EACCES:
            reason += " (is it executable? chmod +x)"
        msg = f"cannot start {program!r}: {reason}"
        raise BackendExited(msg) from exc
    finally:
        sock.close()
    log.info("started %s (pid %d) listening at %s", Path(program).name, popen.pid, addr)
    return SpawnedProcess(popen, addr, backend.kill_signal, keeper)
