"""The server-wide buffer budget: what backpressured tunnels may hold, together.

A tunnel or relay holds data in memory only while a write waits: it read a
piece from one side and the other side does not take it yet (a stalled
backend, a client that stopped reading).  Each direction holds at most one
piece (the read that is being written), never a queue; a piece is at most
:data:`~wstrio._io.streams.pipes.READ_SIZE` (64 KiB), so 1,000 stalled
tunnels hold up to about 64 MiB.

:class:`BufferBudget` counts those bytes server-wide (``held``).  When they
reach ``max-buffer-memory``, every read, of every tunnel and relay, asks
for :data:`SMALL_READ` bytes instead of 64 KiB, so a further stalled tunnel
adds at most 4 KiB: memory stays near the budget however many tunnels stall.
Flowing tunnels go on, with more system calls per byte, until the backlog
drains below half the budget.  One WARNING when the budget is reached, one
INFO when it is no longer (a budget reached again within a minute is not
logged again).

Memory given back: freed pieces go back to the C allocator, which keeps
them (glibc returns only the top of its heap).  After a backlog of at least
:data:`TRIM_AFTER` bytes has mostly drained, :meth:`BufferBudget.run` calls
glibc's ``malloc_trim(0)``, which returns free pages to the kernel, so the
RSS of a server that had 1,000 stalled tunnels falls back once they are gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import sys
import time
from collections.abc import Callable
from typing import final

import trio

__all__ = ["SMALL_READ", "TRIM_AFTER", "UNLIMITED", "BufferBudget"]

log = logging.getLogger("wstrio.server")

READ_SIZE = 65536  # pipes.READ_SIZE (pipes imports this module)
SMALL_READ = 4096
"""Bytes per read while the server is at its budget."""
LOG_EVERY = 60.0
"""Seconds between two WARNINGs of a budget reached again and again."""
TRIM_AFTER = 8 * 2**20
"""A drained backlog at least this large makes :meth:`BufferBudget.run` return free memory to the kernel."""


def _find_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # pragma: no cover - not glibc (musl has none)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    result: Callable[[int], int] = trim
    return result


_malloc_trim = _find_malloc_trim()


@final
class BufferBudget:
    """Bytes held by writes that wait, server-wide, against ``limit`` (0: no limit).

    The pipes call :meth:`hold` when a write must wait and :meth:`release`
    when it is over; readers use :attr:`read_size`.
    """

    __slots__ = ("_logged", "_over", "_warned_at", "held", "limit", "peak", "read_size", "trims")

    def __init__(self, limit: int = 0) -> None:
        self.limit = limit
        self.held = 0
        """Bytes in writes waiting for a peer now."""
        self.peak = 0
        """The highest :attr:`held` since memory was last given back."""
        self.read_size = READ_SIZE
        """What a read should ask for now: 64 KiB, or :data:`SMALL_READ` at the budget."""
        self.trims = 0
        """How many times memory was given back (``malloc_trim``)."""
        self._over = False
        self._warned_at = -math.inf
        self._logged = False  # this episode was logged (so its end is too)

    def hold(self, n: int) -> None:
        held = self.held = self.held + n
        if held > self.peak:
            self.peak = held
        if self.limit and held >= self.limit and not self._over:
            self._over = True
            self.read_size = SMALL_READ
            now = time.monotonic()
            if now - self._warned_at < LOG_EVERY:
                return  # a backlog that comes and goes is logged once a minute
            self._warned_at = now
            self._logged = True
            log.warning(
                "max-buffer-memory (%d bytes) reached by backpressured tunnels: reads are %d bytes until it drains",
                self.limit,
                SMALL_READ,
            )

    def release(self, n: int) -> None:
        held = self.held = self.held - n
        if self._over and held < self.limit // 2:
            self._over = False
            self.read_size = READ_SIZE
            if not self._logged:
                return
            self._logged = False
            log.info("backpressured tunnels hold %d bytes, under max-buffer-memory again", held)

    def trim(self) -> bool:
        """Give free memory back to the kernel if a large backlog has drained; True if it did."""
        if self.peak - self.held < TRIM_AFTER or self.held > self.peak // 4:
            return False
        self.peak = self.held
        if _malloc_trim is None:  # pragma: no cover - not glibc
            return False
        with contextlib.suppress(OSError):
            _malloc_trim(0)
        self.trims += 1
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """A server service: check once a second whether memory can be given back."""
        task_status.started()
        while True:
            await trio.sleep(1.0)
            self.trim()


UNLIMITED = BufferBudget()
"""The budget of pipes made without one (tests, standalone tunnels): counts, never limits."""
