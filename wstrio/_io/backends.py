"""Backends at run time: connecting, balancing, spawned pools.

Every backend, TCP, unix socket or spawned, ends up as a
:class:`trio.abc.Stream` from one seam, :class:`BackendConnector`, so tests
and embedders can inject memory streams (``connector=`` of
:func:`wstrio.serve`).

Each route with backends gets a :class:`RouteBackends`: it owns the route's
balancer (sans-I/O, :mod:`wstrio._sansio.balance`) and, for ``bin-path``
hosts, a :class:`SpawnedPool` whose supervisor tasks live in the server's
backend nursery.  :meth:`RouteBackends.connect` implements lighttpd's
failure handling: a host that refuses or times out is disabled for
``disable-time`` and the balancer picks again, up to
:data:`~wstrio._sansio.balance.MAX_CONNECT_ATTEMPTS` tries; then the request
gets a 503.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Protocol, final

import attrs
import trio

from .._config import Backend, Route
from .._errors import BackendExited, BackendUnavailable
from .._sansio import balance
from .._sansio.request import Request
from .spawn import ProcessAddress, SpawnedProcess, process_address, spawn_backend

__all__ = ["BackendConnector", "BackendLease", "RouteBackends", "SocketConnector", "SpawnedPool"]

log = logging.getLogger("wstrio.backend")


class BackendConnector(Protocol):
    """Opens a byte stream to a backend address (the injectable seam)."""

    async def connect(self, address: ProcessAddress) -> trio.abc.Stream:
        """Connect to ``address``.

        Raises:
            OSError: the connection failed (refused, unreachable, ...).
        """
        ...


@final
class SocketConnector:
    """The default connector: TCP and unix sockets."""

    async def connect(self, address: ProcessAddress) -> trio.abc.Stream:
        if isinstance(address.address, str):
            return await trio.open_unix_socket(address.address)
        host, port = address.address
        # TCP_NODELAY is set by trio; lighttpd sets it for tunnels as well.
        return await trio.open_tcp_stream(host, port)


@attrs.define(eq=False)
class _Slot:
    """One address a host can be reached at (a process, for a spawned pool)."""

    address: ProcessAddress
    running: bool = True
    load: int = 0
    last_used: float = 0.0
    process: SpawnedProcess | None = None


@final
class SpawnedPool:
    """The processes of one ``bin-path`` backend, supervised.

    :meth:`run` starts ``min-procs`` processes (raising if the first start
    fails, so a broken ``bin-path`` stops wstrio at startup with a clear
    message), restarts any that exit (with back-off, so a crashing program
    does not spin), and stops them all when cancelled.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        # Newest first, as lighttpd keeps its process list.
        self.slots: list[_Slot] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for index in range(max(self.backend.min_procs, 1)):
                await nursery.start(self._supervise, index)
            task_status.started()

    async def _supervise(self, index: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        slot = _Slot(process_address(self.backend, index), running=False)
        self.slots.insert(0, slot)
        backoff = balance.RestartBackoff()
        started = False
        try:
            while True:
                try:
                    proc = spawn_backend(self.backend, index)
                except BackendExited:
                    if not started:
                        raise
                    log.exception("%s: restart failed", self.backend.name)
                    proc = None
                    slot.running = False
                else:
                    slot.process = proc
                    slot.running = True
                    if not started:
                        started = True
                        task_status.started()
                    if proc is None:
                        # Adopted an existing listener; nothing to supervise.
                        await trio.sleep_forever()
                    status = await proc.wait()
                    slot.running = False
                    proc.cleanup_socket()
                    log.warning(
                        "%s: process %d (pid %d) exited with status %d; restarting",
                        self.backend.name, index, proc.pid, status,
                    )
                delay = backoff.next_delay(trio.current_time())
                if delay:
                    log.info("%s: waiting %.1f s before restarting process %d", self.backend.name, delay, index)
                    await trio.sleep(delay)
        finally:
            slot.running = False
            if slot.process is not None and slot.process.returncode is None:
                await slot.process.stop()
                slot.process.cleanup_socket()


@final
@attrs.define(eq=False)
class BackendLease:
    """A connection to a backend, counted in the balancer until released."""

    stream: trio.abc.Stream
    backend: Backend
    address: ProcessAddress
    _owner: RouteBackends
    _host_index: int
    _slot: _Slot
    _released: bool = False

    def release(self) -> None:
        """Stop counting this connection in the host's load (idempotent)."""
        if not self._released:
            self._released = True
            self._owner.balancer.release(self._host_index)
            self._slot.load = max(0, self._slot.load - 1)
            self._slot.last_used = trio.current_time()


@final
class RouteBackends:
    """The backends of one route, with balancing and failover."""

    def __init__(self, route: Route, connector: BackendConnector) -> None:
        self.route = route
        self.connector = connector
        self.pools: list[SpawnedPool | None] = []
        self._static_slots: list[list[_Slot]] = []
        hashes = []
        for backend in route.backends:
            if backend.spawned:
                self.pools.append(SpawnedPool(backend))
                self._static_slots.append([])
            else:
                self.pools.append(None)
                self._static_slots.append([_Slot(process_address(backend, 0))])
            if backend.socket is not None:
                hashes.append(balance.host_hash(str(backend.socket), 0))
            else:
                hashes.append(balance.host_hash(backend.host or "", backend.port or 0))
        self.balancer = balance.Balancer(
            route.balance,
            hashes,
            [b.disable_time for b in route.backends],
        )

    def _slots(self, index: int) -> list[_Slot]:
        pool = self.pools[index]
        return pool.slots if pool is not None else self._static_slots[index]

    async def start(self, nursery: trio.Nursery) -> None:
        """Start the spawned pools' supervisors in ``nursery``."""
        for pool in self.pools:
            if pool is not None:
                await nursery.start(pool.run)

    @contextlib.asynccontextmanager
    async def connect(self, request: Request) -> AsyncIterator[BackendLease]:
        """Connect to a backend chosen by the route's balance rule.

        Yields:
            a :class:`BackendLease`; its stream is closed and its load
            released on exit.

        Raises:
            BackendUnavailable: every try failed or no host is up (503).
        """
        lease = await self._connect(request)
        try:
            yield lease
        finally:
            lease.release()
            await trio.aclose_forcefully(lease.stream)

    async def _connect(self, request: Request) -> BackendLease:
        client_ip = request.client[0] if request.client else ""
        last_error = "no backend is up"
        for _ in range(balance.MAX_CONNECT_ATTEMPTS):
            now = trio.current_time()
            index = self.balancer.pick(now, path=request.path, authority=request.host, client_ip=client_ip)
            if index is None:
                break
            backend = self.route.backends[index]
            slots = self._slots(index)
            choice = balance.pick_process([s.load for s in slots], [s.running for s in slots])
            if choice is None:
                self.balancer.mark_failed(index, now)
                last_error = f"{backend.name}: no process is running"
                continue
            slot = slots[choice]
            self.balancer.acquire(index)
            slot.load += 1
            try:
                timeout = backend.connect_timeout or math.inf
                with trio.fail_after(timeout):
                    stream = await self.connector.connect(slot.address)
            except (OSError, trio.TooSlowError) as exc:
                self.balancer.release(index)
                slot.load -= 1
                self.balancer.mark_failed(index, trio.current_time())
                if isinstance(exc, trio.TooSlowError):
                    last_error = f"{slot.address}: connect timed out after {backend.connect_timeout:g} s"
                else:
                    last_error = f"{slot.address}: {exc.strerror or exc}"
                log.warning("backend %s failed: %s; disabled for %g s", backend.name, last_error, backend.disable_time)
                continue
            self.balancer.mark_connected(index)
            _set_nodelay(stream)
            return BackendLease(stream, backend, slot.address, self, index, slot)
        msg = f"no backend of route {self.route.describe()} could be reached ({last_error})"
        raise BackendUnavailable(msg)


def _set_nodelay(stream: trio.abc.Stream) -> None:
    sock = getattr(stream, "socket", None)
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def make_route_backends(routes: Sequence[Route], connector: BackendConnector) -> dict[int, RouteBackends]:
    """A :class:`RouteBackends` for every route that has backends, keyed by route index."""
    return {i: RouteBackends(r, connector) for i, r in enumerate(routes) if r.backends}
