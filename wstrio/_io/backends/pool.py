"""Spawned pools at run time: the supervised processes of one ``bin-path`` backend.

A :class:`SpawnedPool` keeps its processes (``Slot``s, newest first, as
lighttpd keeps its list) running in the server's backend nursery; the
decisions (which process, when to grow, shrink or wait before a restart)
are sans-I/O, in :mod:`wstrio._sansio.backends.pool`.  Starting and stopping
one process is :mod:`wstrio._io.backends.process`.
"""

from __future__ import annotations

import logging
import math
from typing import final

import attrs
import trio

from wstrio._config import Backend
from wstrio._errors import BackendExited
from wstrio._io.backends.process import SpawnedProcess, spawn_backend
from wstrio._io.keeper import Keeper
from wstrio._sansio.backends.address import BackendAddress, backend_address
from wstrio._sansio.backends.pool import PoolPolicy, RestartBackoff

__all__ = ["Slot", "SpawnedPool"]

log = logging.getLogger("wstrio.backend")

_DRAIN_POLL = 0.5
"""Seconds between two looks at a draining pool's load."""


@attrs.define(eq=False)
class Slot:
    """One address a host can be reached at (a process, for a spawned pool)."""

    address: BackendAddress
    index: int = 0
    running: bool = True
    load: int = 0
    last_used: float = 0.0
    process: SpawnedProcess | None = None
    scope: trio.CancelScope | None = None
    started: trio.Event = attrs.Factory(trio.Event)


@final
class SpawnedPool:
    """The processes of one ``bin-path`` backend, supervised.

    :meth:`run` starts ``min-procs`` processes (raising if one cannot be
    started, so a broken ``bin-path`` stops wstrio at startup with a clear
    message) and then, once a second, applies lighttpd's pool rules
    (:class:`~wstrio._sansio.backends.pool.PoolPolicy`): one more process when
    every process is loaded above ``max-load-per-proc`` (up to
    ``max-procs``), and an idle surplus process stopped after
    ``idle-timeout``.  A process that exits is restarted, with back-off
    (:class:`~wstrio._sansio.backends.pool.RestartBackoff`) so a crashing program
    does not spin.  With ``min-procs = 0`` the first process starts on the
    first request.  Cancelling :meth:`run` stops every process
    (``kill-signal``, then SIGKILL).
    """

    def __init__(self, backend: Backend, keeper: Keeper | None = None) -> None:
        self.backend = backend
        self.keeper = keeper
        """Told of every process group started and stopped (see :mod:`wstrio._io.keeper`)."""
        self.policy = PoolPolicy.from_backend(backend)
        # Newest first, as lighttpd keeps its process list.
        self.slots: list[Slot] = []
        self._nursery: trio.Nursery | None = None
        self._scope: trio.CancelScope | None = None
        self.restarts = 0
        """Processes restarted after they exited."""

    @property
    def started(self) -> bool:
        """Whether :meth:`run` has been started (a reload keeps such a pool running)."""
        return self._scope is not None

    @property
    def load(self) -> int:
        """Connections to this pool's processes open now."""
        return sum(s.load for s in self.slots)

    @property
    def running(self) -> int:
        """Processes that can take connections now."""
        return sum(1 for s in self.slots if s.running)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for _ in range(self.policy.min_procs):
                    await self._start_slot()
                task_status.started()
                if self.policy.adaptive:
                    while True:
                        await trio.sleep(1.0)
                        self._tick(trio.current_time())
                else:
                    await trio.sleep_forever()

    def stop(self) -> None:
        """Stop every process now (as cancelling :meth:`run` does)."""
        if self._scope is not None:
            self._scope.cancel()

    async def drain(self, limit: float) -> None:
        """Stop the processes once no connection uses them, or after ``limit`` seconds (0: no limit).

        What a reload does with a pool the new configuration no longer has:
        the tunnels open to it keep running until they end.
        """
        load = self.load
        if load:
            bound = f"up to {limit:g} s (drain-timeout)" if limit else "however long they last"
            log.info(
                "%s: no longer configured; its processes stop when its %d open connection%s end (%s)",
                self.backend.name, load, "s" if load != 1 else "", bound,
            )  # fmt: skip
        with trio.move_on_after(limit or math.inf) as waited:
            # Polled: the load is a sum that every lease changes, and a pool drains once per reload.
            while self.load:  # noqa: ASYNC110
                await trio.sleep(_DRAIN_POLL)
        if waited.cancelled_caught:
            log.warning(
                "%s: drain-timeout (%g s) passed with %d connections open; stopping its processes",
                self.backend.name, limit, self.load,
            )  # fmt: skip
        else:
            log.info("%s: no longer configured and no connection left; stopping its processes", self.backend.name)
        self.stop()

    def _tick(self, now: float) -> None:
        live = [s for s in self.slots if s.scope is not None and not s.scope.cancel_called]
        if self.policy.should_spawn(now, [s.load for s in live]):
            log.info("%s: every process is busy; starting another", self.backend.name)
            assert self._nursery is not None
            self._nursery.start_soon(self._start_slot)
        stop = self.policy.idle_to_stop(
            now, [s.load for s in live], [s.last_used for s in live], [s.running for s in live]
        )
        if stop is not None:
            slot = live[stop]
            log.info("%s: stopping idle process %d", self.backend.name, slot.index)
            slot.running = False
            assert slot.scope is not None
            slot.scope.cancel()

    async def _start_slot(self) -> Slot:
        used = {s.index for s in self.slots}
        index = next(i for i in range(len(used) + 1) if i not in used)
        slot = Slot(backend_address(self.backend, index), index=index, running=False)
        slot.last_used = trio.current_time()
        self.slots.insert(0, slot)
        assert self._nursery is not None
        try:
            await self._nursery.start(self._supervise, slot)
        except BaseException:
            if slot in self.slots:  # _supervise's finally may have removed it
                self.slots.remove(slot)
            raise
        return slot

    async def ensure_started(self) -> None:
        """Start a first process now if the pool is empty (``min-procs = 0``)."""
        if self.policy.spawn_on_demand(len(self.slots)) and self._nursery is not None:
            await self._start_slot()
        elif self.slots and not any(s.running for s in self.slots):
            with trio.move_on_after(self.backend.connect_timeout or math.inf):
                await self.slots[0].started.wait()

    async def _supervise(self, slot: Slot, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        backoff = RestartBackoff()
        first = True
        try:
            with trio.CancelScope() as slot.scope:
                while True:
                    if not first:
                        self.restarts += 1
                    try:
                        proc = spawn_backend(self.backend, slot.index, self.keeper)
                    except BackendExited:
                        if first:
                            raise
                        log.exception("%s: restart failed", self.backend.name)
                    else:
                        slot.process = proc
                        slot.running = True
                        slot.started.set()
                        backoff.started(trio.current_time())
                        if first:
                            first = False
                            task_status.started()
                        status = await proc.wait()
                        slot.running = False
                        proc.cleanup_socket()
                        log.warning(
                            "%s: process %d (pid %d) exited with status %d; restarting",
                            self.backend.name,
                            slot.index,
                            proc.pid,
                            status,
                        )
                    delay = backoff.next_delay(trio.current_time())
                    if delay:
                        log.info(
                            "%s: waiting %.1f s before restarting process %d", self.backend.name, delay, slot.index
                        )
                        await trio.sleep(delay)
        finally:
            slot.running = False
            if slot in self.slots:
                self.slots.remove(slot)
            if slot.process is not None and slot.process.returncode is None:
                await slot.process.stop()
                slot.process.cleanup_socket()
