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
4. on SIGHUP it reloads: a new generation of workers with the new
   configuration, and the old workers finish their connections
   (:meth:`Supervisor.reload`);
5. on SIGINT/SIGTERM it sends SIGTERM to every worker, which then drain as a
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

from wstrio._config import Backend, ListenAddress, Route, ServerConfig
from wstrio._io.backends.pool import SpawnedPool
from wstrio._io.backends.process import make_preexec
from wstrio._io.http.tls import ReloadableContext, listener_wants_tls
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


@attrs.define(eq=False)
class _Generation:
    """The workers of one configuration (a reload starts the next generation)."""

    number: int
    config: ServerConfig
    text: ConfigText
    inherited: list[tuple[int, bool, bool]]
    """``(fd, TLS, PROXY protocol)`` of each listening socket its workers accept on."""
    popens: dict[int, subprocess.Popen[bytes]] = attrs.Factory(dict)
    ready: dict[int, trio.Event] = attrs.Factory(dict)
    """Set once worker N listens (or has exited: then :attr:`popens` says so)."""
    retired: bool = False
    """Its workers were told to finish their connections and exit; none is restarted."""
    done: trio.Event = attrs.Factory(trio.Event)
    """Every worker of a retired generation has exited."""

    def is_retired(self) -> bool:
        """:attr:`retired`, read afresh (it changes while a worker task waits)."""
        return self.retired


_READY_WAIT = 30.0
"""Seconds a new worker has to start listening after a reload before the reload is given up."""


@final
class Supervisor:
    """Runs ``config.workers`` worker processes; see the module docstring.

    SIGHUP (:meth:`reload`): the new configuration is checked here, its new
    listeners are bound and its new ``bin-path`` backends started; then a new
    generation of workers starts with it.  Once every new worker listens, the
    old ones are told (SIGUSR2) to stop accepting and exit when their last
    connection ends (at most ``drain-timeout``): nothing open is dropped.
    Backends no longer configured stop once the old workers are gone.
    """

    def __init__(self, config: ServerConfig, config_text: ConfigText, *, log_level: str = "info") -> None:
        self.config = fixed_pools(config)
        self.config_text = config_text
        self.log_level = log_level
        self._generations: list[_Generation] = []
        self._listeners: dict[ListenAddress, list[trio.SocketListener]] = {}
        self._pools: list[SpawnedPool] = []
        self._keeper = Keeper()
        self._backend_nursery: trio.Nursery | None = None
        self._worker_nursery: trio.Nursery | None = None
        self._reloading = trio.Lock()

    @property
    def workers(self) -> dict[int, subprocess.Popen[bytes]]:
        """The current generation's worker processes, by number."""
        return self._generations[-1].popens if self._generations else {}

    def signal_workers(self, signum: int) -> None:
        """Send ``signum`` to every running worker, of every generation (e.g. SIGUSR1: reopen the log)."""
        for generation in self._generations:
            for popen in generation.popens.values():
                if popen.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        popen.send_signal(signum)

    def _inherited(self, config: ServerConfig) -> list[tuple[int, bool, bool]]:
        return [
            (listener.socket.fileno(), listener_wants_tls(config, address.tls), address.proxy_protocol)
            for address in config.listen
            for listener in self._listeners[address]
        ]

    async def _start_pools(self, config: ServerConfig, running: list[SpawnedPool]) -> list[SpawnedPool]:
        """The pools ``config`` needs: those of ``running`` with an equal backend, and new ones started.

        Raises:
            BackendExited: a new one cannot be started (those started here are stopped).
        """
        assert self._backend_nursery is not None
        pools: list[SpawnedPool] = []
        started: list[SpawnedPool] = []
        try:
            for route in config.routes:
                for backend in route.backends:
                    if not backend.spawned:
                        continue
                    kept = next((p for p in running if p.backend == backend and p not in pools), None)
                    if kept is not None:
                        pools.append(kept)
                        continue
                    if not self._keeper.running:
                        await self._backend_nursery.start(self._keeper.run)
                    pool = SpawnedPool(backend, self._keeper)
                    await self._backend_nursery.start(pool.run)
                    pools.append(pool)
                    started.append(pool)
        except BaseException:
            for pool in started:
                pool.stop()
            raise
        return pools

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the listeners, start backends and workers, and supervise until cancelled.

        Cancellation: every worker gets SIGTERM and drains (bounded by
        ``shutdown-timeout`` plus a margin, then SIGKILL); then the spawned
        backends are stopped.
        """
        config = self.config
        try:
            for address in config.listen:
                self._listeners[address] = await open_listeners([address])
            async with trio.open_nursery() as backend_nursery:
                self._backend_nursery = backend_nursery
                self._pools = await self._start_pools(config, [])
                async with trio.open_nursery() as worker_nursery:
                    self._worker_nursery = worker_nursery
                    generation = _Generation(0, config, self.config_text, self._inherited(config))
                    self._start_generation(generation)
                    for listeners in self._listeners.values():
                        for listener in listeners:
                            log.info("%d workers listening on %s", config.workers, listener.socket.getsockname())
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            self._close_listeners(list(self._listeners), self.config)

    def _close_listeners(self, addresses: Sequence[ListenAddress], config: ServerConfig) -> None:
        for address in addresses:
            for listener in self._listeners.pop(address, []):
                listener.socket.close()
            if address.kind == "unix" and address.path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(address.path)

    def _start_generation(self, generation: _Generation) -> None:
        assert self._worker_nursery is not None
        self._generations.append(generation)
        for number in range(generation.config.workers):
            generation.ready[number] = trio.Event()
            self._worker_nursery.start_soon(self._run_worker, generation, number)

    async def reload(self, config_text: ConfigText, config: ServerConfig) -> str:
        """Serve ``config`` with a new generation of workers; the old ones finish their connections.

        Returns:
            a line for the log.

        Raises:
            ConfigError: the TLS files cannot be used.
            OSError: a new address cannot be bound.
            BackendExited: a new ``bin-path`` backend cannot be started.
            RuntimeError: a new worker did not start listening.

            In every case the running workers, backends and listeners stay.
        """
        async with self._reloading:
            return await self._reload(config_text, fixed_pools(config))

    async def _reload(self, text: ConfigText, config: ServerConfig) -> str:
        old_config = self.config
        if any(listener_wants_tls(config, address.tls) for address in config.listen):
            ReloadableContext.from_config(config)  # the workers load it; a bad file must stop the reload here
        added = [a for a in dict.fromkeys(config.listen) if a not in self._listeners]
        opened: dict[ListenAddress, list[trio.SocketListener]] = {}
        try:
            for address in added:
                opened[address] = await open_listeners([address])
        except BaseException:
            for listeners in opened.values():
                for listener in listeners:
                    listener.socket.close()
            raise
        self._listeners.update(opened)
        try:
            pools = await self._start_pools(config, self._pools)
        except BaseException:
            self._close_listeners(added, config)
            raise
        fresh = [pool for pool in pools if pool not in self._pools]
        old = self._generations[-1]
        generation = _Generation(old.number + 1, config, text, self._inherited(config))
        self._start_generation(generation)
        with trio.move_on_after(_READY_WAIT):
            for event in generation.ready.values():
                await event.wait()

        def failed_to_start(number: int) -> bool:
            popen = generation.popens.get(number)  # (None: not even started)
            return not generation.ready[number].is_set() or popen is None or popen.poll() is not None

        failed = [n for n in generation.ready if failed_to_start(n)]
        if failed:
            generation.retired = True
            for popen in generation.popens.values():
                if popen.poll() is None:
                    popen.send_signal(signal.SIGTERM)
            self._generations.remove(generation)
            for pool in fresh:
                pool.stop()
            self._close_listeners(added, config)
            msg = f"new worker{'s' if len(failed) != 1 else ''} {', '.join(map(str, failed))} did not start (see above)"
            raise RuntimeError(msg)
        # Commit: the new workers listen.  The old ones finish what they have.
        removed_addresses = [a for a in self._listeners if a not in config.listen]
        self._close_listeners(removed_addresses, config)
        removed_pools = [pool for pool in self._pools if pool not in pools]
        self._pools = pools
        self.config = config
        self.config_text = text
        retiring = [g for g in self._generations if g is not generation and not g.retired]
        for gone in retiring:
            gone.retired = True
            for popen in gone.popens.values():
                if popen.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        popen.send_signal(signal.SIGUSR2)
        assert self._backend_nursery is not None
        if removed_pools:
            self._backend_nursery.start_soon(self._stop_after, retiring, removed_pools)
        line = (
            f"{config.workers} new workers serve it; {sum(len(g.popens) for g in retiring)} old ones finish"
            f" their connections; bin-path backends: {len(pools) - len(fresh)} kept, {len(fresh)} started,"
            f" {len(removed_pools)} draining"
        )
        if added:
            line += "; now listening on " + ", ".join(map(str, added))
        if removed_addresses:
            line += "; no longer listening on " + ", ".join(map(str, removed_addresses))
        if old_config.workers != config.workers:
            line += f"; {old_config.workers} -> {config.workers} workers"
        return line

    async def _stop_after(self, generations: Sequence[_Generation], pools: Sequence[SpawnedPool]) -> None:
        """Stop ``pools`` once every worker of ``generations`` has exited (they alone used them)."""
        for generation in generations:
            await generation.done.wait()
        for pool in pools:
            log.info("%s: no longer configured and its old workers are gone; stopping its processes", pool.backend.name)
            pool.stop()

    async def _run_worker(self, generation: _Generation, number: int) -> None:
        """Run worker ``number`` of ``generation``, restarting it when it dies, until the generation retires."""
        backoff = RestartBackoff()
        fds = [fd for fd, _, _ in generation.inherited]
        spec = ",".join(
            ":".join([str(fd), *(["tls"] if tls else []), *(["proxy"] if proxy else [])])
            for fd, tls, proxy in generation.inherited
        )
        text = generation.text
        try:
            while not generation.is_retired():
                ready_read, ready_write = os.pipe()
                argv = [
                    sys.executable, "-m", "wstrio", "_worker", "-", "--source", text.source,
                    "--base-dir", str(text.base_dir), "--listen-fds", spec, "--log-level", self.log_level,
                    "--worker-number", str(number), "--ready-fd", str(ready_write),
                ]  # fmt: skip
                try:
                    # Started from this (the main) thread: the parent-death signal is
                    # tied to the thread that forks.
                    popen = subprocess.Popen(  # noqa: ASYNC220 - fork from the main thread (parent-death signal)
                        argv,
                        pass_fds=[*fds, ready_write],
                        process_group=0,
                        preexec_fn=make_preexec(),
                        stdin=subprocess.PIPE,
                    )
                finally:
                    os.close(ready_write)
                # The configuration as the supervisor read it (once: it may have
                # come from a pipe), on the worker's standard input.
                assert popen.stdin is not None
                with contextlib.suppress(BrokenPipeError):
                    popen.stdin.write(text.text.encode())
                popen.stdin.close()
                generation.popens[number] = popen
                backoff.started(trio.current_time())
                log.info("started worker %d (pid %d)%s", number, popen.pid, _generation_note(generation))
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_wait_ready, ready_read, generation.ready[number])
                        await _wait_exit(popen)
                        nursery.cancel_scope.cancel()
                except BaseException:
                    with trio.CancelScope(shield=True):
                        await self._stop(popen)
                    raise
                generation.ready[number].set()  # (exited: whoever waits sees it in popens)
                if generation.is_retired():
                    log.info("worker %d (pid %d) of the previous configuration exited", number, popen.pid)
                    return
                delay = backoff.next_delay(trio.current_time())
                log.warning(
                    "worker %d (pid %d) exited with status %s; restarting in %.1f s",
                    number, popen.pid, popen.returncode, delay,
                )  # fmt: skip
                await trio.sleep(delay)
        finally:
            if generation.retired and all(p.poll() is not None for p in generation.popens.values()):
                generation.done.set()

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


def _generation_note(generation: _Generation) -> str:
    return f" with configuration {generation.number}" if generation.number else ""


async def _wait_ready(fd: int, ready: trio.Event) -> None:
    """Set ``ready`` when the worker writes to its readiness pipe (or closes it by exiting)."""
    try:
        await trio.lowlevel.wait_readable(fd)
        ready.set()
    finally:
        trio.lowlevel.notify_closing(fd)
        os.close(fd)


async def _wait_exit(popen: subprocess.Popen[bytes]) -> None:
    pidfd = os.pidfd_open(popen.pid)
    try:
        while popen.poll() is None:
            await trio.lowlevel.wait_readable(pidfd)
    finally:
        trio.lowlevel.notify_closing(pidfd)
        os.close(pidfd)
