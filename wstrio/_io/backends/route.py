"""The backends of one route: balancing, failover, leases.

Each route with backends gets a :class:`RouteBackends`: it owns the route's
balancer (sans-I/O, :mod:`wstrio._sansio.backends.balance`) and, for ``bin-path``
hosts, a :class:`~wstrio._io.backends.pool.SpawnedPool` whose supervisor
tasks live in the server's backend nursery.  :meth:`RouteBackends.connect`
implements lighttpd's failure handling: a host that refuses or times out is
disabled for ``disable-time`` and the balancer picks again, up to
:data:`~wstrio._sansio.backends.balance.MAX_CONNECT_ATTEMPTS` tries; then the
request gets a 503.  A connection is a :class:`BackendLease`, counted in the
host's load until it is released; the streams are opened through the
:class:`~wstrio._io.backends.connect.BackendConnector` seam.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import math
import socket
from collections.abc import AsyncIterator, Sequence
from typing import final

import attrs
import trio

from wstrio._config import Backend, Route
from wstrio._errors import BackendUnavailable
from wstrio._io.backends.connect import BackendConnector, open_app_stream_pair, run_app, set_nodelay
from wstrio._io.backends.pool import Slot, SpawnedPool
from wstrio._io.keeper import Keeper
from wstrio._io.streams.pipes import close_stream
from wstrio._sansio.backends.address import BackendAddress, app_address, backend_address
from wstrio._sansio.backends.balance import Balancer, should_reconnect
from wstrio._sansio.backends.pool import pick_process
from wstrio._sansio.http.request import Request
from wstrio._sansio.proxyproto import encode_header

__all__ = ["BackendLease", "RouteBackends", "make_route_backends"]

log = logging.getLogger("wstrio.backend")

LOCAL_SHORTAGE = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
"""Errors that are wstrio's own shortage (file descriptors, kernel memory), not the backend's fault."""


def connect_errors(exc: BaseException) -> list[OSError]:
    """The OS errors behind a failed connect (trio groups one per address it tried)."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        found = [e for e in cause.exceptions if isinstance(e, OSError)]
        if found:
            return found
    return [exc] if isinstance(exc, OSError) else []


def describe_connect_error(exc: OSError) -> str:
    """``Connection refused``, not trio's "all attempts to connect ... failed"."""
    reasons: list[str] = []
    for error in connect_errors(exc):
        reason = error.strerror or str(error)
        if reason not in reasons:
            reasons.append(reason)
    return "; ".join(reasons) or str(exc)


@final
class _Shortage:
    """Logs wstrio's own resource shortage once per episode (until a connect succeeds)."""

    def __init__(self) -> None:
        self.active = False

    def report(self, what: str) -> None:
        if not self.active:
            self.active = True
            log.error(
                "cannot open a backend connection: %s (wstrio's own limit, not the backend's: "
                "raise LimitNOFILE or lower max-connections); answering 503 until it passes",
                what,
            )

    def over(self) -> None:
        if self.active:
            self.active = False
            log.warning("backend connections can be opened again")


@final
@attrs.define(eq=False)
class BackendLease:
    """A connection to a backend, counted in the balancer until released."""

    stream: trio.abc.Stream
    backend: Backend
    address: BackendAddress
    _owner: RouteBackends
    _host_index: int
    _slot: Slot
    _released: bool = False
    app_stream: trio.abc.Stream | None = None
    """For an in-process ``app`` backend: the app's end of the socket pair."""

    def release(self) -> None:
        """Stop counting this connection in the host's load (idempotent)."""
        if not self._released:
            self._released = True
            self._owner.release_host(self._host_index)
            self._slot.load = max(0, self._slot.load - 1)
            self._slot.last_used = trio.current_time()


@final
class RouteBackends:
    """The backends of one route, with balancing and failover."""

    def __init__(
        self,
        route: Route,
        connector: BackendConnector,
        *,
        spawn: bool = True,
        running: Sequence[SpawnedPool] = (),
    ) -> None:
        """``running``: pools of an earlier configuration (a reload); one whose backend equals one of
        this route's is used for it, processes and all, instead of a new one."""
        self.route = route
        self._started = False
        self.connector = connector
        self.shortage = _Shortage()
        self._waiters: collections.deque[trio.Event] = collections.deque()
        """Requests waiting for a backend below its ``max-connections``, first come first served."""
        self.pools: list[SpawnedPool | None] = []
        self._static_slots: list[list[Slot]] = []
        for backend in route.backends:
            if backend.spawned and not spawn:
                # A worker process: the main process runs the pool (all
                # max-procs processes, as lighttpd does with several workers);
                # we only connect to them.
                self.pools.append(None)
                self._static_slots.append([Slot(backend_address(backend, i)) for i in range(backend.max_procs)])
            elif backend.spawned:
                kept = next((p for p in running if p.backend == backend and p not in self.pools), None)
                self.pools.append(kept if kept is not None else SpawnedPool(backend))
                self._static_slots.append([])
            elif backend.app is not None:
                self.pools.append(None)
                self._static_slots.append([Slot(app_address(backend))])
            else:
                self.pools.append(None)
                self._static_slots.append([Slot(backend_address(backend))])
        self.balancer = Balancer.for_route(route)
        self._apps = any(b.app is not None for b in route.backends)

    def _slots(self, index: int) -> list[Slot]:
        pool = self.pools[index]
        return pool.slots if pool is not None else self._static_slots[index]

    async def start(self, nursery: trio.Nursery, keeper: Keeper | None = None) -> None:
        """Resolve host names for ``hash``/``sticky``, and start the spawned pools in ``nursery``.

        ``keeper`` is told of every process the pools start and stop.  Pools
        already running (kept by a reload) are left as they are; a second
        call does nothing.
        """
        if self._started:
            return
        self._started = True
        if self.route.balance in ("hash", "sticky"):
            # lighttpd hashes the address it resolved at startup, so keys
            # land where lighttpd would put them.  (Connections still resolve
            # the name each time: lighttpd's resolve-once is a bug.)
            self.balancer = Balancer.for_route(self.route, [await _resolve(b) for b in self.route.backends])
        for pool in self.pools:
            if pool is not None and not pool.started:
                pool.keeper = keeper
                await nursery.start(pool.run)

    @property
    def spawned_pools(self) -> list[SpawnedPool]:
        """The pools of this route's ``bin-path`` backends (run here, not in a worker)."""
        return [pool for pool in self.pools if pool is not None]

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
                nursery.start_soon(run_app, app, lease.app_stream, request, lease.backend.name)
                try:
                    yield lease
                finally:
                    # The tunnel is over: nothing the app does now can reach
                    # the client, so it is cancelled rather than awaited.
                    nursery.cancel_scope.cancel()
        finally:
            lease.release()
            await close_stream(lease.stream)
            if lease.app_stream is not None:
                # run_app closes it too; this covers an app task that never ran.
                await close_stream(lease.app_stream)

    @property
    def waiting(self) -> int:
        """Requests in the queue now (every backend at ``max-connections``)."""
        return len(self._waiters)

    def release_host(self, index: int) -> None:
        """A connection to host ``index`` is over (or never opened): one slot is free again."""
        self.balancer.release(index)
        if self._waiters:
            self._waiters.popleft().set()

    async def _wait_for_slot(self, deadline: float, *, again: bool) -> None:
        """Wait in the route's queue until a backend connection ends (bounded).

        Raises:
            BackendUnavailable: the queue is full (``queue-size``), or nothing
                was freed by ``deadline`` (``queue-timeout``).
        """
        route = self.route
        if not again and len(self._waiters) >= route.queue_size:
            msg = (
                f"every backend of route {route.describe()} is at max-connections and"
                f" {len(self._waiters)} requests already wait (queue-size = {route.queue_size})"
            )
            raise BackendUnavailable(msg)
        event = trio.Event()
        if again:  # woken, but a newcomer took the slot: keep our place
            self._waiters.appendleft(event)
        else:
            self._waiters.append(event)
        try:
            with trio.move_on_at(deadline):
                await event.wait()
                return
        finally:
            if not event.is_set():
                self._waiters.remove(event)
        if event.is_set() and self._waiters:
            self._waiters.popleft().set()  # freed just as we gave up: the next one's turn
        msg = (
            f"every backend of route {route.describe()} stayed at max-connections for"
            f" {route.queue_timeout:g} s (queue-timeout)"
        )
        raise BackendUnavailable(msg)

    async def _connect(self, request: Request) -> BackendLease:
        client_ip = request.client[0] if request.client else ""
        last_error = "no backend is up"
        for pool in self.pools:
            if pool is not None:
                await pool.ensure_started()
        reconnects = 0
        queue_deadline: float | None = None
        while True:
            now = trio.current_time()
            for i, pool in enumerate(self.pools):
                if pool is not None:
                    self.balancer.set_active_procs(i, pool.running)
            index = self.balancer.pick(now, path=request.path, authority=request.host, client_ip=client_ip)
            if index is None:
                if self.balancer.all_up_are_full(now):
                    again = queue_deadline is not None
                    if queue_deadline is None:
                        queue_deadline = now + self.route.queue_timeout
                    await self._wait_for_slot(queue_deadline, again=again)
                    continue
                break
            backend = self.route.backends[index]
            slots = self._slots(index)
            choice = pick_process([s.load for s in slots], [s.running for s in slots])
            if choice is None:  # pragma: no cover - set_active_procs excludes such hosts
                break
            slot = slots[choice]
            self.balancer.acquire(index)
            slot.load += 1
            slot.last_used = now
            if backend.app is not None:
                # A real socket pair: the kernel's buffers bound what the app
                # can write ahead of a slow client, as with any backend.
                try:
                    ours, theirs = open_app_stream_pair()
                except OSError as exc:
                    self.release_host(index)
                    slot.load -= 1
                    msg = f"in-process backend {backend.name}: cannot open a socket pair: {exc.strerror or exc}"
                    raise BackendUnavailable(msg) from exc
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
                self.release_host(index)
                slot.load -= 1
                shortage = [e for e in connect_errors(exc) if e.errno in LOCAL_SHORTAGE]
                if shortage:
                    # Out of file descriptors or kernel memory: every backend
                    # would fail the same way, and none is at fault.  Never
                    # mark one down; the client gets 503 at once.
                    what = shortage[0].strerror or str(shortage[0])
                    self.shortage.report(what)
                    msg = f"no backend connection could be opened: {what} (wstrio's own limit)"
                    raise BackendUnavailable(msg) from exc
                self.balancer.mark_failed(index, trio.current_time())
                timed_out = not isinstance(exc, OSError)
                if isinstance(exc, OSError):
                    last_error = f"{slot.address}: {describe_connect_error(exc)}"
                else:
                    last_error = f"{slot.address}: connect timed out after {backend.connect_timeout:g} s"
                log.warning("backend %s failed: %s; disabled for %g s", backend.name, last_error, backend.disable_time)
                if not should_reconnect(reconnects, timed_out=timed_out):
                    break
                reconnects += 1
                continue
            if backend.send_proxy_protocol is not None:
                # The client's address first, before any byte of its own (send-proxy-protocol).
                header = encode_header(2 if backend.send_proxy_protocol == "v2" else 1, request.client, request.server)
                try:
                    with trio.fail_after(backend.connect_timeout or math.inf):
                        await stream.send_all(header)
                except (OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
                    await close_stream(stream)
                    self.release_host(index)
                    slot.load -= 1
                    last_error = f"{slot.address}: sending the PROXY protocol header failed: {exc!r}"
                    log.warning("backend %s failed: %s", backend.name, last_error)
                    break
            self.balancer.mark_connected(index)
            self.shortage.over()
            set_nodelay(stream)
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


def make_route_backends(
    routes: Sequence[Route], connector: BackendConnector, *, spawn: bool = True
) -> dict[int, RouteBackends]:
    """A :class:`RouteBackends` for every route that has backends, keyed by route index.

    With ``spawn=False`` (worker processes), ``bin-path`` backends are not
    started here: their processes are expected at their usual addresses.
    """
    return {i: RouteBackends(r, connector, spawn=spawn) for i, r in enumerate(routes) if r.backends}
