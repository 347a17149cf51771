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
    """One running child of a ``bin-path`` backend.

    Created by :func:`spawn_backend`; :meth:`wait` returns when it exits and
    :meth:`stop` ends it (kill-signal, then SIGKILL).
    """

    def __init__(self, popen: subprocess.Popen[bytes], address: BackendAddress, kill_signal: int) -> None:
        self.popen = popen
        self.address = address
        self.kill_signal = kill_signal
        self._pidfd: int | None = None
        with contextlib.suppress(OSError, AttributeError):
            self._pidfd = os.pidfd_open(popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    async def wait(self) -> int:
        """Wait for the process to exit; return its exit status."""
        if self._pidfd is not None:
            while self.popen.poll() is None:
                await trio.lowlevel.wait_readable(self._pidfd)
        else:  # pragma: no cover - kernels without pidfd: poll
            while self.popen.poll() is None:  # noqa: ASYNC110 - nothing to wait on
                await trio.sleep(0.05)
        self._close_pidfd()
        assert self.popen.returncode is not None
        return self.popen.returncode

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            fd, self._pidfd = self._pidfd, None
            with contextlib.suppress(OSError):
                trio.lowlevel.notify_closing(fd)
            os.close(fd)

    def _signal_group(self, sig: int) -> None:
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:  # pragma: no cover - group left by the child
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)

    async def stop(self, grace: float = 5.0) -> int:
        """Send ``kill-signal`` to the process group, SIGKILL after ``grace`` s.

        Cancellation: shielded internally, bounded by ``grace`` + 1 s.
        """
        with trio.CancelScope(shield=True):
            self._signal_group(self.kill_signal)
            with trio.move_on_after(grace):
                return await self.wait()
            log.warning("backend pid %d ignored signal %d; killing it", self.pid, self.kill_signal)
            self._signal_group(signal.SIGKILL)
            with trio.move_on_after(1.0):
                return await self.wait()
            self._close_pidfd()
        return -signal.SIGKILL

    def cleanup_socket(self) -> None:
        """Remove the unix socket file once the process is gone."""
        if isinstance(self.address.address, str):
            with contextlib.suppress(OSError):
                os.unlink(self.address.address)


def spawn_backend(backend: Backend, index: int) -> SpawnedProcess | None:
    """Start process ``index`` of a ``bin-path`` backend.

    Returns ``None`` when something already listens at the address: like
    lighttpd, wstrio then uses it and spawns nothing.

    Raises:
        BackendExited: the program cannot be started (with the reason).
    """
    addr = backend_address(backend, index)
    if _already_listening(addr):
        log.warning("%s: something already listens at %s; using it instead of spawning", backend.name, addr)
        return None
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
    return SpawnedProcess(popen, addr, backend.kill_signal)
