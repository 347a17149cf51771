"""Spawned pools: which process takes a request, when to grow, shrink and restart, without I/O.

Theory of operation
-------------------
A ``bin-path`` backend is a *pool* of processes that wstrio spawns and
supervises (:mod:`wstrio._io.backends.pool`).  Choosing the host a request
goes to is :mod:`wstrio._sansio.backends.balance`; this module decides
everything within one pool, as lighttpd's ``gw_backend.c`` does:

1. **Within a host that is a pool** (``gw_write_request``, spec §3.6):
   :func:`pick_process` chooses the least-loaded running process, newest
   first.
2. **The pool's size** (the once-a-second trigger, spec §3.5):
   :class:`PoolPolicy` decides adaptive spawning and idle stopping.
3. **Crashes**: :class:`RestartBackoff` says how long to wait before
   restarting a crashed process.

Time is always passed in as ``now``, in monotonic seconds (``trio.current_time()``
in the I/O layer); nothing here reads a clock, sleeps or touches a socket.

Never imports trio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, final

if TYPE_CHECKING:
    from collections.abc import Sequence

    from wstrio._config import Backend

__all__ = ["PoolPolicy", "RestartBackoff", "pick_process"]


def pick_process(loads: Sequence[int], running: Sequence[bool]) -> int | None:
    """Choose a process within a pool (``gw_write_request``, spec §3.6).

    The first running process in the list, then any later running process
    with strictly lower load than the best so far; so the least-loaded running
    process, ties to the earliest.

    Args:
        loads: each process's load (requests assigned or connecting).
        running: whether each process can take a request (running and not
            disabled).  Index 0 is the newest process, as in lighttpd's list.

    Returns:
        The process index, or None when no process is running.
    """
    best: int | None = None
    for i, (load, up) in enumerate(zip(loads, running, strict=True)):
        if up and (best is None or load < loads[best]):
            best = i
    return best


@final
class PoolPolicy:
    """Adaptive spawning and idle stopping of one spawned pool (spec §3.5).

    Meant to be asked once per trigger tick (lighttpd: once a second).  Each
    action is limited to one per ``interval`` seconds; a True answer from
    :meth:`should_spawn`, or an index from :meth:`idle_to_stop`, counts as that
    action having been taken at ``now``.

    Adaptive spawning is off (both methods always decline) when
    ``min_procs == max_procs``: then ``idle-timeout`` has no effect.

    Args:
        min_procs: processes kept running (clamped to ``max_procs``, as lighttpd does).
        max_procs: upper limit of processes.
        max_load_per_proc: spawn when every process has a load above this.
        idle_timeout: stop a surplus process idle for longer than this (seconds).
        interval: minimum seconds between two spawns, and between two stops.
    """

    def __init__(
        self,
        *,
        min_procs: int,
        max_procs: int,
        max_load_per_proc: int,
        idle_timeout: float,
        interval: float = 1.0,
    ) -> None:
        self.min_procs: Final = min(min_procs, max_procs)
        self.max_procs: Final = max_procs
        self.max_load_per_proc: Final = max_load_per_proc
        self.idle_timeout: Final = idle_timeout
        self.interval: Final = interval
        self._last_spawn: float | None = None
        self._last_stop: float | None = None

    @classmethod
    def from_backend(cls, backend: Backend) -> PoolPolicy:
        """The policy of a ``bin-path`` backend's pool."""
        return cls(
            min_procs=backend.min_procs,
            max_procs=backend.max_procs,
            max_load_per_proc=backend.max_load_per_proc,
            idle_timeout=backend.idle_timeout,
        )

    @property
    def adaptive(self) -> bool:
        """True if the pool grows and shrinks (``min-procs != max-procs``)."""
        return self.min_procs != self.max_procs

    def _due(self, last: float | None, now: float) -> bool:
        return last is None or now - last >= self.interval

    def should_spawn(self, now: float, loads: Sequence[int]) -> bool:
        """True if the pool is overloaded and one more process should start now.

        Every process of the pool (``loads``: one entry per process that has not
        been stopped) has a load above ``max_load_per_proc``, there is at least
        one and fewer than ``max_procs``, and no spawn was decided in the last
        ``interval``.  An empty pool is not grown here: see
        :meth:`spawn_on_demand`.
        """
        if not self.adaptive or not loads or len(loads) >= self.max_procs:
            return False
        if any(load <= self.max_load_per_proc for load in loads):
            return False
        if not self._due(self._last_spawn, now):
            return False
        self._last_spawn = now
        return True

    def spawn_on_demand(self, process_count: int) -> bool:
        """True if a request finding no host should start this pool's first process.

        lighttpd's special case in ``gw_host_get``: ``min-procs = 0`` and no
        process exists yet.
        """
        return self.min_procs == 0 and process_count == 0 and self.max_procs > 0

    def idle_to_stop(
        self,
        now: float,
        loads: Sequence[int],
        last_used: Sequence[float],
        running: Sequence[bool] | None = None,
    ) -> int | None:
        """The process to stop now because it is surplus and idle, or None.

        Scans newest first (index 0) and returns the first process with load 0,
        running, and last used more than ``idle_timeout`` seconds ago, while
        the pool has more than ``min_procs`` processes.  At most one per
        ``interval``.

        Args:
            now: monotonic time.
            loads: each process's load, newest first.
            last_used: each process's last-use time (start, or last request assigned).
            running: whether each process is alive; default all.
        """
        if not self.adaptive or len(loads) <= self.min_procs:
            return None
        if not self._due(self._last_stop, now):
            return None
        alive = running if running is not None else [True] * len(loads)
        for i, (load, used, up) in enumerate(zip(loads, last_used, alive, strict=True)):
            # lighttpd keeps a process whose last_used >= now - idle_timeout,
            # so it must be idle strictly longer than idle_timeout.
            if load == 0 and up and used < now - self.idle_timeout:
                self._last_stop = now
                return i
        return None


@final
class RestartBackoff:
    """How long to wait before restarting a crashed process of a pool.

    lighttpd restarts a crashed process at once, guarded only against
    restarting the same process twice in one second.  wstrio keeps the
    immediate restart for a process that crashes after running well, but
    backs off exponentially for one that keeps dying soon after it starts:

    * the first crash of a streak: restart at once (delay 0);
    * each further crash within ``healthy_after`` seconds of the restart:
      ``initial``, then doubling (0.5, 1, 2, 4, 8, 16 s), capped at ``maximum``
      (30 s);
    * a process that ran ``healthy_after`` seconds (60 s) ends the streak:
      its crash counts as a first crash again.

    Use one per process slot.  Call :meth:`next_delay` when the process exits
    unexpectedly and wait that long before restarting it.  :meth:`started` is
    optional: without it the restart is assumed to happen exactly when the
    returned delay ends.
    """

    def __init__(
        self,
        *,
        initial: float = 0.5,
        maximum: float = 30.0,
        healthy_after: float = 60.0,
    ) -> None:
        self.initial: Final = initial
        self.maximum: Final = maximum
        self.healthy_after: Final = healthy_after
        self._streak = 0
        self._delay = 0.0
        self._started_at: float | None = None

    @property
    def streak(self) -> int:
        """Crashes in the current streak (0 before the first one)."""
        return self._streak

    def started(self, now: float) -> None:
        """A process was (re)started at ``now``."""
        self._started_at = now

    def next_delay(self, now: float) -> float:
        """A process crashed at ``now``; return the delay in seconds to restart it."""
        if self._started_at is None or now - self._started_at >= self.healthy_after:
            self._streak = 0
        self._streak += 1
        if self._streak == 1:
            self._delay = 0.0
        else:
            self._delay = min(max(self._delay * 2, self.initial), self.maximum)
        # Until started() says otherwise, assume the restart happens when the
        # delay ends, so crashes reported alone still measure uptime.
        self._started_at = now + self._delay
        return self._delay
