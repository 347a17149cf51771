"""The hub: one task per server that moves tunnel data while it is plain data.

Waiting on a socket the Trio way costs a task switch, an ``epoll_ctl`` and a
dozen Python calls, twice per message: most of the cost of a small WebSocket
message once the framing is cheap (see docs/performance.md).  The hub keeps
tunnel sockets registered in a private epoll set for as long as their
traffic is plain data, and moves it synchronously: read what arrived,
decode, write to the other side, all without a task switch.  The epoll set's
own file descriptor is what the hub task waits on, through Trio.

A tunnel in the hub hands itself back to its ordinary Trio tasks (see
:mod:`wstrio._io.streams.tunnel`) at the first thing that is not plain data moving
freely: a control frame, an EOF, an error, or a write that would block
(backpressure).  The handlers registered here never block and never await.
"""

from __future__ import annotations

import contextlib
import logging
import select
from collections.abc import Callable
from typing import final

import trio

__all__ = ["Hub"]

log = logging.getLogger("wstrio.tunnel")

# Events handled per wake-up before yielding to the rest of the server.
_BATCH = 256


@final
class Hub:
    """A private epoll set, driven by one task (:meth:`run`)."""

    def __init__(self) -> None:
        self._epoll: select.epoll | None = None
        self._handlers: dict[int, Callable[[], None]] = {}
        self._on_error: dict[int, Callable[[], None]] = {}

    @property
    def running(self) -> bool:
        """True while :meth:`run` runs (tunnels may use the hub)."""
        return self._epoll is not None

    def register(self, fd: int, handler: Callable[[], None], on_error: Callable[[], None]) -> None:
        """Call ``handler()`` whenever ``fd`` is readable (level-triggered).

        Should ``handler`` raise (a bug), the error is logged, ``fd`` is
        unregistered and ``on_error()`` is called: one tunnel fails, the hub
        and the server go on.
        """
        assert self._epoll is not None
        self._epoll.register(fd, select.EPOLLIN)
        self._handlers[fd] = handler
        self._on_error[fd] = on_error

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd`` (idempotent)."""
        self._on_error.pop(fd, None)
        if self._handlers.pop(fd, None) is not None and self._epoll is not None:
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)

    async def run(self) -> None:
        """Dispatch readable sockets to their handlers until cancelled."""
        self._epoll = epoll = select.epoll()
        fd = epoll.fileno()
        try:
            while True:
                await trio.lowlevel.wait_readable(fd)
                for ready, _mask in epoll.poll(0, _BATCH):
                    handler = self._handlers.get(ready)
                    if handler is None:
                        continue
                    try:
                        handler()
                    except Exception:
                        log.exception("tunnel fast path failed on fd %d", ready)
                        on_error = self._on_error.get(ready)
                        self.unregister(ready)
                        if on_error is not None:
                            on_error()
        finally:
            self._epoll = None
            self._handlers.clear()
            self._on_error.clear()
            trio.lowlevel.notify_closing(fd)
            epoll.close()
