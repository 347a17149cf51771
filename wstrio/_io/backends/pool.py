"""Backends at run time: connecting, balancing, spawned pools.

Every backend, TCP, unix socket or spawned, ends up as a
:class:`trio.abc.Stream` from one seam, :class:`BackendConnector`, so tests
and embedders can inject memory streams (``connector=`` of
:func:`wstrio.serve`).

Each route with backends gets a :class:`RouteBackends`: it owns the route's
balancer (sans-I/O, :mod:`wstrio._sansio.backends.balance`) and, for ``bin-path``
hosts, a :class:`SpawnedPool` whose supervisor tasks live in the server's
backend nursery.  :meth:`RouteBackends.connect` implements lighttpd's
failure handling: a host that refuses or times out is disabled for
``disable-time`` and the balancer picks again, up to
:data:`~wstrio._sansio.backends.balance.MAX_CONNECT_ATTEMPTS` tries; then the request
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
import trio.testing

from wstrio._config import App, Backend, Route
from wstrio._errors import BackendExited, BackendUnavailable
from wstrio._io.backends.process import ProcessAddress, SpawnedProcess, process_address, spawn_backend
from wstrio._io.streams.pipes import close_stream
from wstrio._sansio.backends import balance
from wstrio._sansio.http.request import Request

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
    (:class:`~wstrio._sansio.backends.balance.PoolPolicy`): one more process when
    every process is loaded above ``max-load-per-proc`` (up to
    ``max-procs``), and an idle surplus process stopped after
    ``idle-timeout``.  A process that exits is restarted, with back-off
    (:class:`~wstrio._sansio.backends.balance.RestartBackoff`) so a crashing program
    does not spin.  With ``min-procs = 0`` the first process starts on the
    first request.  Cancelling :meth:`run` stops every process
    (``kill-signal``, then SIGKILL).
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.policy = balance.PoolPolicy.from_backend(backend)
        # Newest first, as lighttpd keeps its process list.
        self.slots: list[_Slot] = []
        self._nursery: trio.Nursery | None = None

    @property
    def running(self) -> int:
        """Processes that can take connections now."""
        return sum(1 for s in self.slots if s.running)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for _ in range(self.policy.min_procs):
                await self._start_slot()
            task_status.started()
            if self.policy.adaptive:
                while True:
                    await trio.sleep(1.0)
                    self._tick(trio.current_time())

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

    async def _start_slot(self) -> _Slot:
        used = {s.index for s in self.slots}
        index = next(i for i in range(len(used) + 1) if i not in used)
        slot = _Slot(process_address(self.backend, index), index=index, running=False)
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

    async def _supervise(self, slot: _Slot, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        backoff = balance.RestartBackoff()
        first = True
        try:
            with trio.CancelScope() as slot.scope:
                while True:
                    try:
                        proc = spawn_backend(self.backend, slot.index)
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
                        if proc is None:
                            # Adopted an existing listener; nothing to supervise.
                            await trio.sleep_forever()
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
    app_stream: trio.abc.Stream | None = None
    """For an in-process ``app`` backend: the app's end of the stream pair."""

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

    def __init__(self, route: Route, connector: BackendConnector, *, spawn: bool = True) -> None:
        self.route = route
        self.connector = connector
        self.pools: list[SpawnedPool | None] = []
        self._static_slots: list[list[_Slot]] = []
        for backend in route.backends:
            if backend.spawned and not spawn:
                # A worker process: the main process runs the pool (all
                # max-procs processes, as lighttpd does with several workers);
                # we only connect to them.
                self.pools.append(None)
                self._static_slots.append([_Slot(process_address(backend, i)) for i in range(backend.max_procs)])
            elif backend.spawned:
                self.pools.append(SpawnedPool(backend))
                self._static_slots.append([])
            elif backend.app is not None:
                self.pools.append(None)
                self._static_slots.append([_Slot(ProcessAddress(socket.AF_UNSPEC, backend.name))])
            else:
                self.pools.append(None)
                self._static_slots.append([_Slot(process_address(backend, 0))])
        self.balancer = balance.Balancer.for_route(route)
        self._apps = any(b.app is not None for b in route.backends)

    def _slots(self, index: int) -> list[_Slot]:
        pool = self.pools[index]
        return pool.slots if pool is not None else self._static_slots[index]

    async def start(self, nursery: trio.Nursery) -> None:
        """Resolve host names for ``hash``/``sticky``, and start the spawned pools in ``nursery``."""
        if self.route.balance in ("hash", "sticky"):
            # lighttpd hashes the address it resolved at startup, so keys
            # land where lighttpd would put them.  (Connections still resolve
            # the name each time: lighttpd's resolve-once is a bug.)
            self.balancer = balance.Balancer.for_route(self.route, [await _resolve(b) for b in self.route.backends])
        for pool in self.pools:
            if pool is not None:
                await nursery.start(pool.run)

    def connect(self, request: Request) -> contextlib.AbstractAsyncContextManager[BackendLease]:
        """Connect to a backend chosen by the route's balance rule.

        Use as ``async with backends.connect(request) as lease:``; the
        lease's stream is closed and its load released on exit.

        Raises:
            BackendUnavailable: every try failed or no host is up (503).
        """
        if self._apps:
            return self._connect_app(request)
        return _Connecting(self, request)

    @contextlib.asynccontextmanager
    async def _connect_app(self, request: Request) -> AsyncIterator[BackendLease]:
        lease = await self._connect(request)
        try:
            if lease.app_stream is None:
                yield lease
                return
            app = lease.backend.app
            assert app is not None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_run_app, app, lease.app_stream, request, lease.backend.name)
                try:
                    yield lease
                finally:
                    # The tunnel is over: nothing the app does now can reach
                    # the client, so it is cancelled rather than awaited.
                    nursery.cancel_scope.cancel()
        finally:
            lease.release()
            await close_stream(lease.stream)

    async def _connect(self, request: Request) -> BackendLease:
        client_ip = request.client[0] if request.client else ""
        last_error = "no backend is up"
        for pool in self.pools:
            if pool is not None:
                await pool.ensure_started()
        reconnects = 0
        while True:
            now = trio.current_time()
            for i, pool in enumerate(self.pools):
                if pool is not None:
                    self.balancer.set_active_procs(i, pool.running)
            index = self.balancer.pick(now, path=request.path, authority=request.host, client_ip=client_ip)
            if index is None:
                break
            backend = self.route.backends[index]
            slots = self._slots(index)
            choice = balance.pick_process([s.load for s in slots], [s.running for s in slots])
            if choice is None:  # pragma: no cover - set_active_procs excludes such hosts
                break
            slot = slots[choice]
            self.balancer.acquire(index)
            slot.load += 1
            slot.last_used = now
            if backend.app is not None:
                # Lockstep streams: the app's send_all waits for the tunnel to
                # read, so a slow client bounds the app's memory like a socket.
                ours, theirs = trio.testing.lockstep_stream_pair()
                self.balancer.mark_connected(index)
                return BackendLease(ours, backend, slot.address, self, index, slot, app_stream=theirs)
            timed_out = False
            try:
                connected: trio.abc.Stream | None = None
                with trio.move_on_after(backend.connect_timeout or math.inf):
                    connected = await self.connector.connect(slot.address)
                if connected is None:
                    raise trio.TooSlowError
                stream = connected
            except (OSError, trio.TooSlowError) as exc:
                self.balancer.release(index)
                slot.load -= 1
                self.balancer.mark_failed(index, trio.current_time())
                timed_out = isinstance(exc, trio.TooSlowError)
                if timed_out:
                    last_error = f"{slot.address}: connect timed out after {backend.connect_timeout:g} s"
                else:
                    last_error = f"{slot.address}: {getattr(exc, 'strerror', None) or exc}"
                log.warning("backend %s failed: %s; disabled for %g s", backend.name, last_error, backend.disable_time)
                if not balance.should_reconnect(reconnects, timed_out=timed_out):
                    break
                reconnects += 1
                continue
            self.balancer.mark_connected(index)
            _set_nodelay(stream)
            return BackendLease(stream, backend, slot.address, self, index, slot)
        msg = f"no backend of route {self.route.describe()} could be reached ({last_error})"
        raise BackendUnavailable(msg)


@final
class _Connecting:
    """``async with`` for a socket backend (no contextlib generator: this is per connection)."""

    __slots__ = ("_lease", "_owner", "_request")

    def __init__(self, owner: RouteBackends, request: Request) -> None:
        self._owner = owner
        self._request = request
        self._lease: BackendLease | None = None

    async def __aenter__(self) -> BackendLease:
        self._lease = await self._owner._connect(self._request)
        return self._lease

    async def __aexit__(self, *exc_info: object) -> None:
        lease = self._lease
        assert lease is not None
        lease.release()
        await close_stream(lease.stream)


async def _resolve(backend: Backend) -> str | None:
    if backend.socket is not None or backend.host is None:
        return None
    try:
        info = await trio.socket.getaddrinfo(backend.host, backend.port, type=socket.SOCK_STREAM)
    except OSError:
        return None
    return str(info[0][4][0]) if info else None


async def _run_app(app: App, stream: trio.abc.Stream, request: Request, name: str) -> None:
    try:
        async with stream:
            await app(stream, request)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client went away while the app was writing
    except Exception:
        log.exception("in-process backend %s failed", name)


def _set_nodelay(stream: trio.abc.Stream) -> None:
    sock = getattr(stream, "socket", None)
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def make_route_backends(
    routes: Sequence[Route], connector: BackendConnector, *, spawn: bool = True
) -> dict[int, RouteBackends]:
    """A :class:`RouteBackends` for every route that has backends, keyed by route index.

    With ``spawn=False`` (worker processes), ``bin-path`` backends are not
    started here: their processes are expected at their usual addresses.
    """
    return {i: RouteBackends(r, connector, spawn=spawn) for i, r in enumerate(routes) if r.backends}
