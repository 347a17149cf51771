"""Choosing a backend: lighttpd's gw_backend balance rules, without I/O.

Theory of operation
-------------------
A route (lighttpd: one ``*.server`` key) has one or more *hosts*, one per
``[[route.backend]]``.  A host is either a remote address or a spawned pool of
processes.  Choosing where a request goes happens at two levels, exactly as in
lighttpd's ``gw_backend.c``:

1. **Between hosts** (``gw_host_get``, spec §3.7): a :class:`Balancer`, one per
   route, applies the route's ``balance`` algorithm to the hosts that are
   *available*: not disabled at ``now``, with at least one usable process and
   not excluded by the caller.  It keeps the per-host ``load`` (requests
   assigned from selection until the backend connection closes), the time
   until which a host is disabled after a failed connect, the round-robin
   cursor and the statistics counters.
2. **Within a host that is a pool** (``gw_write_request``, spec §3.6):
   :func:`~wstrio._sansio.backends.pool.pick_process` chooses the
   least-loaded running process, newest first.

The I/O layer drives the retry loop (spec §3.8): ``pick`` → ``acquire`` →
connect; on a refused or failed connect ``mark_failed`` + ``release`` and pick
again (the failed host is disabled now, so the balance rule lands on another
one while any is up).  :func:`should_reconnect` says when to give up with 503.

The pool-management decisions of the once-a-second trigger (spec §3.5),
adaptive spawning, idle stopping and restart back-off, are in
:mod:`wstrio._sansio.backends.pool`.

Time is always passed in as ``now``, in monotonic seconds (``trio.current_time()``
in the I/O layer); nothing here reads a clock, sleeps or touches a socket.

Differences from lighttpd, on purpose:

* lighttpd re-enables a disabled host on its 1-second trigger tick, and only
  once the integer clock is *past* ``disabled_until``; a host with
  ``disable-time = 1`` is typically back after 1-2 s.  Here a host is
  available again as soon as ``now >= disabled_until`` (fractional seconds).
* lighttpd treats an unknown ``balance`` name as ``fair``; the configuration
  loader rejects it, and :class:`Balancer` raises
  :class:`~wstrio._errors.ConfigError`.

Never imports trio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, final

import attrs

from wstrio._errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from wstrio._config import Backend, Route

__all__ = [
    "ALGORITHMS",
    "MAX_CONNECT_ATTEMPTS",
    "MAX_RECONNECTS",
    "MAX_RECONNECTS_AFTER_TIMEOUT",
    "Balancer",
    "HostStatistics",
    "djb_hash",
    "host_hash",
    "should_reconnect",
]

ALGORITHMS: Final = frozenset({"fair", "least-connection", "round-robin", "hash", "sticky"})
"""The ``balance`` names :class:`Balancer` accepts.

``fair`` and ``least-connection`` are two names for one rule."""

MAX_RECONNECTS: Final = 5
"""Connect attempts a request may make *after* its first one fails (spec §3.8).

lighttpd's ``gw_write_error`` does ``if (hctx->reconnects++ < 5) return
gw_reconnect(...)`` with ``reconnects`` starting at 0, so the test passes for
0, 1, 2, 3 and 4: five reconnects, and the sixth failure is answered 503."""

MAX_CONNECT_ATTEMPTS: Final = MAX_RECONNECTS + 1
"""Connect attempts a request may make in all (6).

The first attempt plus :data:`MAX_RECONNECTS`."""

MAX_RECONNECTS_AFTER_TIMEOUT: Final = 1
"""The reconnect budget when the failure was a connect *timeout* (spec §3.9).

lighttpd checks ``hctx->reconnects++ < 1`` on that path because the request has
already waited ``connect-timeout`` seconds.  It is the same counter, so a
request that already reconnected once gets 503 on a timeout."""

_SOURCE: Final = "<balancer>"  # ConfigError.source when built outside the loader
_MASK32: Final = 0xFFFFFFFF
_DJB_INIT: Final = 5381


def djb_hash(data: bytes, h: int = _DJB_INIT) -> int:
    """lighttpd's ``djbhash``: for each byte ``h = (h * 33) ^ byte``, in 32 bits.

    ``h`` lets one hash continue another, as ``gw_hash(authority,
    gw_hash(path, 5381))`` does.
    """
    h &= _MASK32
    for byte in data:
        h = ((h * 33) ^ byte) & _MASK32
    return h


def host_hash(backend_address: str, port: int) -> int:
    """A host's fixed hash for ``hash``/``sticky`` balancing: ``djb(address) ^ port``.

    Args:
        backend_address: the host's IP address *string after name resolution*
            (lighttpd hashes the resolved address, not the configured name), or
            the unix socket path.
        port: the TCP port (the configured base port for a pool), 0 for a unix
            socket.
    """
    return djb_hash(_encode(backend_address)) ^ port


def _encode(text: str) -> bytes:
    # surrogateescape so that a path decoded from arbitrary bytes hashes as
    # those same bytes, the way lighttpd hashes its byte buffers.
    return text.encode("utf-8", "surrogateescape")


def should_reconnect(reconnects: int, *, timed_out: bool = False) -> bool:
    """True if a request whose connect just failed may try again (spec §3.8, §3.9).

    Args:
        reconnects: how many times this request has *already* reconnected
            (0 after the first failure).
        timed_out: the failure was ``connect-timeout`` expiring, which allows
            only :data:`MAX_RECONNECTS_AFTER_TIMEOUT` reconnects.

    The caller increments its counter after each reconnect; when this answers
    False the request gets 503.
    """
    budget = MAX_RECONNECTS_AFTER_TIMEOUT if timed_out else MAX_RECONNECTS
    return reconnects < budget


@final
@attrs.frozen
class HostStatistics:
    """One host's counters (lighttpd's ``gw.backend.<label>.*`` for mod_status)."""

    load: int
    """Requests assigned to the host now (``.load``)."""
    disabled: bool
    """The host is disabled after a failed connect (``.disabled``)."""
    disabled_until: float
    """Monotonic time the host becomes available again (0.0 if never disabled)."""
    connected: int
    """Successful connects (``.connected``)."""
    died: int
    """Failed connects other than EAGAIN (``.died``)."""
    overloaded: int
    """Connects that failed with EAGAIN (``.overloaded``)."""

    @property
    def failures(self) -> int:
        """All failed connects: ``died + overloaded``."""
        return self.died + self.overloaded


@final
class Balancer:
    """The balance state of one route: which host gets the next request.

    Hosts are identified by their index in the route's ``backends`` (config
    order matters: ``fair`` ties go to the earliest, ``hash`` ties to the
    latest).

    Args:
        algorithm: one of :data:`ALGORITHMS`.
        host_hashes: each host's :func:`host_hash`; its length is the number
            of hosts.
        disable_times: each host's ``disable-time`` in seconds.

    Raises:
        ConfigError: unknown algorithm.
        ValueError: the sequences differ in length.
    """

    def __init__(
        self,
        algorithm: str,
        host_hashes: Sequence[int],
        disable_times: Sequence[float],
        capacities: Sequence[int] = (),
    ) -> None:
        if algorithm not in ALGORITHMS:
            names = ", ".join(sorted(ALGORITHMS))
            msg = f"expected one of {names}, not {algorithm!r}"
            raise ConfigError(_SOURCE, [("balance", msg)])
        if len(disable_times) != len(host_hashes):
            msg = f"expected one disable time per host ({len(host_hashes)}), not {len(disable_times)}"
            raise ValueError(msg)
        n = len(host_hashes)
        self._algorithm = algorithm
        self._host_hashes = tuple(h & _MASK32 for h in host_hashes)
        self._disable_times = tuple(float(t) for t in disable_times)
        self._load = [0] * n
        # max-connections per host (0: no limit); a full host is not picked.
        self._capacity = list(capacities) or [0] * n
        self._disabled_until = [0.0] * n
        # A remote host is one process; a pool tells us how many of its
        # processes can take a request (lighttpd's host->active_procs).
        self._active_procs = [1] * n
        self._connected = [0] * n
        self._died = [0] * n
        self._overloaded = [0] * n
        # lighttpd's extension->last_used_ndx: starts at -1, so the first
        # round-robin pick is host 0.
        self._last_used = -1

    @classmethod
    def for_route(cls, route: Route, addresses: Sequence[str | None] | None = None) -> Balancer:
        """Build the balancer of ``route``.

        Args:
            route: the route; its ``balance`` and each backend's ``disable_time``
                are used.
            addresses: for each backend, the resolved IP string to hash instead
                of the configured ``host`` (lighttpd hashes the address it
                resolved at startup).  ``None`` entries, or no list at all,
                mean "hash ``host`` as written".  Ignored for unix sockets.
        """
        hashes: list[int] = []
        for i, backend in enumerate(route.backends):
            resolved = addresses[i] if addresses is not None else None
            hashes.append(_backend_hash(backend, resolved))
        return cls(
            route.balance,
            hashes,
            [b.disable_time for b in route.backends],
            [b.max_connections for b in route.backends],
        )

    # ------------------------------------------------------------------ queries

    @property
    def algorithm(self) -> str:
        """The balance algorithm name."""
        return self._algorithm

    @property
    def host_hashes(self) -> tuple[int, ...]:
        """Each host's :func:`host_hash`."""
        return self._host_hashes

    def __len__(self) -> int:
        return len(self._host_hashes)

    def load(self, i: int) -> int:
        """Requests currently assigned to host ``i``."""
        return self._load[i]

    def is_available(self, i: int, now: float) -> bool:
        """True if host ``i`` can be chosen at ``now``.

        It has a usable process and is not disabled; ``exclude`` is not
        considered here.
        """
        return self._active_procs[i] > 0 and now >= self._disabled_until[i]

    def is_full(self, i: int) -> bool:
        """True if host ``i`` has ``max-connections`` requests already."""
        capacity = self._capacity[i]
        return capacity > 0 and self._load[i] >= capacity

    def all_up_are_full(self, now: float) -> bool:
        """True if some host is up and every host that is up is full: waiting for a slot makes sense."""
        up = [i for i in range(len(self)) if self.is_available(i, now)]
        return bool(up) and all(self.is_full(i) for i in up)

    def statistics(self, now: float) -> tuple[HostStatistics, ...]:
        """A snapshot of every host's counters, in config order."""
        return tuple(
            HostStatistics(
                load=self._load[i],
                disabled=now < self._disabled_until[i],
                disabled_until=self._disabled_until[i],
                connected=self._connected[i],
                died=self._died[i],
                overloaded=self._overloaded[i],
            )
            for i in range(len(self))
        )

    # ------------------------------------------------------------------ choosing

    def pick(
        self,
        now: float,
        *,
        path: str,
        authority: str,
        client_ip: str,
        exclude: Collection[int] = (),
    ) -> int | None:
        """Choose a host for a request by the route's algorithm (spec §3.7).

        Only hosts available at ``now``, not in ``exclude`` and not full
        (``max-connections``) are candidates.

        * ``fair`` / ``least-connection``: lowest load, ties to the earliest.
        * ``round-robin``: the next candidate after the last host chosen,
          wrapping round (the cursor advances here, and resets to -1 when no
          host is available, as in lighttpd).
        * ``hash``: largest ``djb(authority, djb(path)) ^ host_hash``, ties to
          the later host (rendezvous hashing: losing a host moves only that
          host's keys).
        * ``sticky``: the same with ``djb(client_ip)``; when the preferred
          host is down the next-highest candidate is used, and clients move
          back when it returns.

        Args:
            now: monotonic time.
            path: decoded URL path without the query (``hash``).
            authority: the request's Host (``hash``).
            client_ip: the client's IP address string, no port (``sticky``).
            exclude: host indices not to choose this time.

        Returns:
            The host index, or None when no host is available (answer 503).
            The host's load is *not* changed: call :meth:`acquire`.
        """
        ok = [self.is_available(i, now) and i not in exclude and not self.is_full(i) for i in range(len(self))]
        n = len(ok)
        if n <= 1:
            # gw_host_get's single-host shortcut: no algorithm, no cursor.
            return 0 if n == 1 and ok[0] else None
        if self._algorithm == "round-robin":
            return self._pick_round_robin(ok)
        if self._algorithm == "hash":
            base = djb_hash(_encode(authority), djb_hash(_encode(path)))
            return self._pick_rendezvous(ok, base)
        if self._algorithm == "sticky":
            return self._pick_rendezvous(ok, djb_hash(_encode(client_ip)))
        return self._pick_least_loaded(ok)

    def _pick_least_loaded(self, ok: Sequence[bool]) -> int | None:
        best: int | None = None
        for i, usable in enumerate(ok):
            # Strictly lower: ties stay with the earliest host.
            if usable and (best is None or self._load[i] < self._load[best]):
                best = i
        return best

    def _pick_round_robin(self, ok: Sequence[bool]) -> int | None:
        n = len(ok)
        last = self._last_used
        ndx = max(last + 1, 0)
        while ndx < n and not ok[ndx]:
            ndx += 1
        if ndx >= n:
            # Wrap: lighttpd searches 0..last *inclusive*, so the host used
            # last time is chosen again when it is the only one left.
            ndx = next((j for j in range(last + 1) if ok[j]), -1)
        self._last_used = ndx
        return ndx if ndx >= 0 else None

    def _pick_rendezvous(self, ok: Sequence[bool], base: int) -> int | None:
        best: int | None = None
        best_score = 0
        for i, usable in enumerate(ok):
            if not usable:
                continue
            score = base ^ self._host_hashes[i]
            # ">=" (lighttpd's "last_max <= cur_max"): ties go to the later host.
            if best is None or score >= best_score:
                best, best_score = i, score
        return best

    # ------------------------------------------------------------------ bookkeeping

    def acquire(self, i: int) -> None:
        """A request was assigned to host ``i``: its load goes up by one."""
        self._load[i] += 1

    def release(self, i: int) -> None:
        """A request left host ``i`` (closed, or its connect failed): load down by one.

        The load never goes below 0.
        """
        if self._load[i] > 0:
            self._load[i] -= 1

    def mark_connected(self, i: int) -> None:
        """A connect to host ``i`` succeeded (the ``.connected`` counter)."""
        self._connected[i] += 1

    def mark_failed(self, i: int, now: float, *, overloaded: bool = False) -> None:
        """A connect to host ``i`` failed: disable it for its ``disable-time``.

        lighttpd's ``gw_proc_connect_error``; it also counts the failure.

        Args:
            i: the host.
            now: monotonic time of the failure.
            overloaded: the failure was EAGAIN (counted as ``.overloaded``
                rather than ``.died``; both disable the host).
        """
        # max(): a late report of an older failure must not shorten a
        # disable period that a newer one started.
        self._disabled_until[i] = max(self._disabled_until[i], now + self._disable_times[i])
        if overloaded:
            self._overloaded[i] += 1
        else:
            self._died[i] += 1

    def set_active_procs(self, i: int, count: int) -> None:
        """Tell how many processes of host ``i`` can take a request.

        For a pool: its running, enabled processes (lighttpd's ``active_procs``).

        A host with 0 is skipped like a disabled one.  Remote hosts keep the
        initial 1 and are disabled through :meth:`mark_failed` instead.
        """
        self._active_procs[i] = max(count, 0)

    def refresh(self, now: float) -> list[int]:
        """Re-enable hosts whose disable time has passed; return their indices.

        Picking already ignores an expired disable time; this exists so the
        I/O layer can log "re-enabled" once per host (``gw_proc_check_enable``).
        """
        reenabled: list[int] = []
        for i, until in enumerate(self._disabled_until):
            if until and now >= until:
                self._disabled_until[i] = 0.0
                reenabled.append(i)
        return reenabled


def _backend_hash(backend: Backend, resolved: str | None) -> int:
    if backend.socket is not None:
        return host_hash(str(backend.socket), 0)
    address = resolved if resolved is not None else (backend.host or "127.0.0.1")
    return host_hash(address, backend.port or 0)
