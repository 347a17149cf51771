"""The server's timer service: every tunnel's timers, checked once a second.

Timers (``max-read-idle``, ``max-write-idle``, the backend's
``read-timeout``/``write-timeout``) are checked from timestamps the pumps
update, instead of a cancel scope around every read and write (which cost
about a tenth of a small message's round trip).  One :class:`TimerService`
per server (created with the server's context, run in its nursery) checks
them all: lighttpd's once-a-second trigger, instead of a timer task per
tunnel, which costs a task spawn (and its memory) per connection.  A tunnel
run on its own keeps an exact watchdog instead (see
:mod:`wstrio._io.streams.tunnel`).
"""

from __future__ import annotations

from typing import Protocol, final

import trio

__all__ = ["TimerService", "Timed"]


class Timed(Protocol):
    """Something with timers: a tunnel."""

    def check_timers(self, now: float) -> float | None:
        """End it if a timer expired (return ``None``); else return the next deadline."""
        ...


@final
class TimerService:
    """Checks every registered tunnel's timers once a second.

    Timeouts fire up to one second late, as in lighttpd.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._timed: set[Timed] = set()

    def add(self, timed: Timed) -> None:
        self._timed.add(timed)

    def discard(self, timed: Timed) -> None:
        self._timed.discard(timed)

    async def run(self) -> None:
        """Check the timers forever (run it in the server's nursery)."""
        while True:
            await trio.sleep(self.interval)
            now = trio.current_time()
            for timed in list(self._timed):
                if timed.check_timers(now) is None:
                    self._timed.discard(timed)
