"""Several worker processes: ``workers = N``.

One Python process runs one Trio loop on one core.  With ``workers = N``
the ``wstrio serve`` process becomes a supervisor:

1. it opens the listening sockets (so every worker accepts on the same
   sockets: the kernel hands each new connection to one of them);
2. it starts the ``bin-path`` backends **once**, for all workers.  As in
   lighttpd with ``server.max-worker``, pools are then fixed-size: all
   ``max-procs`` processes run (``min-procs`` is raised to ``max-procs``),
   and workers spread their connections over them;
3. it starts N workers (``python -m wstrio _worker CONFIG``), handing them
   the listening sockets as inherited file descriptors, and restarts one
   that dies (with back-off);
4. on SIGINT/SIGTERM it sends SIGTERM to every worker, which then drain as a
   single server does (CLOSE 1001 to open WebSockets, up to
   ``shutdown-timeout``), waits for them, and finally stops the backends.

Workers run in their own process group (a terminal's Ctrl-C reaches the
supervisor only) with a parent-death signal, so none outlives it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import final

import attrs
import trio

from wstrio._config import Backend, Route, ServerConfig
from wstrio._io.backends.pool import SpawnedPool
from wstrio._io.backends.process import make_preexec
from wstrio._io.http.tls import listener_wants_tls
from wstrio._io.keeper import Keeper
from wstrio._io.server import open_listeners
from wstrio._sansio.backends.pool import RestartBackoff

__all__ = ["Supervisor", "fixed_pools"]

log = logging.getLogger("wstrio.server")

_STOP_MARGIN = 5.0


def fixed_pools(config: ServerConfig) -> ServerConfig:
    """``config`` with every spawned pool fixed at ``max-procs`` processes."""

    def fix(backend: Backend) -> Backend:
        if backend.spawned and backend.min_procs != backend.max_procs:
            return attrs.evolve(backend, min_procs=backend.max_procs)
        return backend

    def fix_route(route: Route) -> Route:
        return attrs.evolve(route, backends=tuple(fix(b) for b in route.backends))

    return attrs.evolve(config, routes=tuple(fix_route(r) for r in config.routes))


@final
@attrs.frozen
class ConfigText:
    """A configuration file as it was read: workers get the same text, not a second read."""

    text: str
    source: str
    """Its name in messages (the path, or ``<stdin>``)."""
    base_dir: Path
    """Where its relative paths start."""


@final
class Supervisor:
    """Runs ``config.workers`` worker processes; see the module docstring."""

    def __init__(self, config: ServerConfig, config_text: ConfigText, *, log_level: str = "info") -> None:
        self.config = fixed_pools(config)
        self.config_text = config_text
        self.log_level = log_level
        self.workers: dict[int, subprocess.Popen[bytes]] = {}

    def signal_workers(self, signum: int) -> None:
        """Send ``signum`` to every running worker (e.g. SIGHUP: reload certificates)."""
        for popen in self.workers.values():
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    popen.send_signal(signum)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the listeners, start backends and workers, and supervise until cancelled.

        Cancellation: every worker gets SIGTERM and drains (bounded by
        ``shutdown-timeout`` plus a margin, then SIGKILL); then the spawned
        backends are stopped.
        """
        config = self.config
        inherited: list[tuple[int, bool, bool]] = []
        listeners: list[trio.SocketListener] = []
        try:
            for address in config.listen:
                opened = await open_listeners([address])
                listeners.extend(opened)
                inherited.extend(
                    (lst.socket.fileno(), listener_wants_tls(config, address.tls), address.proxy_protocol)
                    for lst in opened
                )
            stopping = trio.Event()
            async with trio.open_nursery() as backend_nursery:
                keeper = Keeper()
                if any(b.spawned for r in config.routes for b in r.backends):
                    await backend_nursery.start(keeper.run)
                for route in config.routes:
                    for backend in route.backends:
                        if backend.spawned:
                            await backend_nursery.start(SpawnedPool(backend, keeper).run)
                async with trio.open_nursery() as worker_nursery:
                    for number in range(config.workers):
                        worker_nursery.start_soon(self._run_worker, number, inherited, stopping)
                    for listener in listeners:
                        log.info("%d workers listening on %s", config.workers, listener.socket.getsockname())
                    task_status.started()
                    try:
                        await trio.sleep_forever()
                    finally:
                        stopping.set()
        finally:
            for listener in listeners:
                listener.socket.close()
            for listen in config.listen:
                if listen.kind == "unix" and listen.path is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(listen.path)

    async def _run_worker(self, number: int, inherited: Sequence[tuple[int, bool, bool]], stopping: trio.Event) -> None:
        """Run worker ``number``, restarting it when it dies, until ``stopping`` is set."""
        backoff = RestartBackoff()
        fds = [fd for fd, _, _ in inherited]
        spec = ",".join(
            ":".join([str(fd), *(["tls"] if tls else []), *(["proxy"] if proxy else [])])
            for fd, tls, proxy in inherited
        )
        text = self.config_text
        argv = [
            sys.executable, "-m", "wstrio", "_worker", "-", "--source", text.source, "--base-dir", str(text.base_dir),
            "--listen-fds", spec, "--log-level", self.log_level, "--worker-number", str(number),
        ]  # fmt: skip
        while not stopping.is_set():
            # Started from this (the main) thread: the parent-death signal is
            # tied to the thread that forks.
            popen = subprocess.Popen(  # noqa: ASYNC220 - fork from the main thread (parent-death signal)
                argv, pass_fds=fds, process_group=0, preexec_fn=make_preexec(), stdin=subprocess.PIPE
            )
            # The configuration as the supervisor read it (once: it may have
            # come from a pipe), on the worker's standard input.
            assert popen.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                popen.stdin.write(text.text.encode())
            popen.stdin.close()
            self.workers[number] = popen
            backoff.started(trio.current_time())
            log.info("started worker %d (pid %d)", number, popen.pid)
            try:
                await _wait_exit(popen)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self._stop(popen)
                raise
            if stopping.is_set():
                return
            delay = backoff.next_delay(trio.current_time())
            log.warning(
                "worker %d (pid %d) exited with status %s; restarting in %.1f s",
                number, popen.pid, popen.returncode, delay,
            )  # fmt: skip
            await trio.sleep(delay)

    async def _stop(self, popen: subprocess.Popen[bytes]) -> None:
        # A worker drains on SIGTERM (CLOSE 1001 to its WebSockets, up to
        # shutdown-timeout); then it is killed.
        if popen.poll() is not None:
            return
        popen.send_signal(signal.SIGTERM)
        with trio.move_on_after(self.config.shutdown_timeout + _STOP_MARGIN):
            await _wait_exit(popen)
            return
        popen.kill()
        await _wait_exit(popen)


async def _wait_exit(popen: subprocess.Popen[bytes]) -> None:
    pidfd = os.pidfd_open(popen.pid)
    try:
        while popen.poll() is None:
            await trio.lowlevel.wait_readable(pidfd)
    finally:
        trio.lowlevel.notify_closing(pidfd)
        os.close(pidfd)
