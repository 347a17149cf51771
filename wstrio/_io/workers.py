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

import attrs
import trio

from .._config import Backend, Route, ServerConfig
from .._sansio import balance
from .backends import SpawnedPool
from .server import open_listeners
from .spawn import make_preexec

__all__ = ["fixed_pools", "serve_workers"]

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


async def _run_worker(
    number: int, config_path: Path, fds: Sequence[int], log_level: str, stopping: trio.Event, grace: float
) -> None:
    """Run worker ``number``, restarting it when it dies, until ``stopping`` is set."""
    backoff = balance.RestartBackoff()
    argv = [
        sys.executable, "-m", "wstrio", "_worker", str(config_path),
        "--listen-fds", ",".join(map(str, fds)), "--log-level", log_level, "--worker-number", str(number),
    ]  # fmt: skip
    while not stopping.is_set():
        # Started from this (the main) thread: the parent-death signal is
        # tied to the thread that forks.
        popen = subprocess.Popen(argv, pass_fds=tuple(fds), process_group=0, preexec_fn=make_preexec())  # noqa: PLW1509
        backoff.started(trio.current_time())
        log.info("started worker %d (pid %d)", number, popen.pid)
        try:
            pidfd = os.pidfd_open(popen.pid)
            try:
                while popen.poll() is None:
                    await trio.lowlevel.wait_readable(pidfd)
            finally:
                trio.lowlevel.notify_closing(pidfd)
                os.close(pidfd)
        except BaseException:
            # Cancelled (shutdown): the worker drains on SIGTERM; give it
            # its shutdown-timeout, then kill it.
            with trio.CancelScope(shield=True):
                if popen.poll() is None:
                    popen.send_signal(signal.SIGTERM)
                    with trio.move_on_after(_STOP_MARGIN + grace):
                        while popen.poll() is None:
                            await trio.sleep(0.05)
                    if popen.poll() is None:
                        popen.kill()
                        popen.wait()
            raise
        if stopping.is_set():
            return
        delay = backoff.next_delay(trio.current_time())
        log.warning("worker %d (pid %d) exited with status %s; restarting in %.1f s", number, popen.pid,
                    popen.returncode, delay)  # fmt: skip
        await trio.sleep(delay)


async def serve_workers(
    config: ServerConfig,
    config_path: Path,
    *,
    log_level: str = "info",
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Supervise ``config.workers`` worker processes until cancelled.

    Cancellation: every worker gets SIGTERM and drains (bounded by
    ``shutdown-timeout`` plus a margin, then SIGKILL); then the spawned
    backends are stopped.
    """
    config = fixed_pools(config)
    listeners = await open_listeners(config.listen)
    fds = [listener.socket.fileno() for listener in listeners]
    stopping = trio.Event()
    try:
        async with trio.open_nursery() as backend_nursery:
            for route in config.routes:
                for backend in route.backends:
                    if backend.spawned:
                        await backend_nursery.start(SpawnedPool(backend).run)
            async with trio.open_nursery() as worker_nursery:
                for number in range(config.workers):
                    worker_nursery.start_soon(
                        _run_worker, number, config_path, fds, log_level, stopping, config.shutdown_timeout
                    )
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
