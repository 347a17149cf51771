"""Background clean-up for what a request leaves behind, bounded: a CGI script that outlives its answer.

A script that has answered but keeps running (it ignores SIGTERM, or
lingers after closing stdout) must not hold the client's next request
back: the answer is complete, the connection goes on, and the script is
stopped and reaped here, in a task of the server's services, within a few
seconds (:meth:`wstrio._io.handlers.cgi.cgi._Script.stop`).  When the
services stop (the server shuts down), whatever is still running is killed
at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import final

import trio

__all__ = ["Reaper"]


@final
class Reaper:
    """Runs clean-up tasks that outlive the request that started them."""

    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None
        self.pending = 0
        """Clean-up tasks running now."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept tasks until cancelled (then each one's own cancellation path ends it)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def start_soon(self, task: Callable[[], Awaitable[None]]) -> bool:
        """Run ``task`` in the background; False when the reaper is not running (do it inline)."""
        if self._nursery is None:
            return False
        self._nursery.start_soon(self._counted, task)
        return True

    async def _counted(self, task: Callable[[], Awaitable[None]]) -> None:
        self.pending += 1
        try:
            await task()
        finally:
            self.pending -= 1
