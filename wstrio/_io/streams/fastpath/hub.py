"""The hub: one task per server that moves tunnel data while it is plain data.

Waiting on a socket the Trio way costs a task switch, an ``epoll_ctl`` and a
dozen Python calls, twice per message: most of the cost of a small WebSocket
message once the framing is cheap (see docs/performance.md).  The hub keeps
tunnel sockets registered in a private epoll set for as long as their
traffic is plain data, and moves it synchronously: read what arrived,
decode, write to the other side, all without a task switch.  The epoll set's
own file descriptor is what the hub task waits on, through Trio.

The interface is one call: a tunnel or relay *enters* the hub with its two
sockets and two handlers (:meth:`Hub.enter`), and gets back one
:class:`~wstrio._io.streams.fastpath.handback.HandBack` when it leaves.  The
handlers run synchronously from the hub task, never block and never await;
each returns ``None`` to stay, or the hand-back value to leave, at the first
thing that is not plain data moving freely: a control frame, an EOF, an
error, or a write that would block (backpressure).  The hub owns
registration, waiting, unregistering and faults (a handler that raises, a
socket that cannot be registered: reason ``fault``).  The handlers of the
tunnel and of the relay are in :mod:`wstrio._io.streams.fastpath.tunnel` and
:mod:`wstrio._io.streams.fastpath.relay`.

The private switch :data:`ENABLED` (or ``Hub(enabled=False)``) turns the hub
off: every connection then stays on its task path, which is how the tests
run every tunnel and relay test both ways.
"""

from __future__ import annotations

import contextlib
import logging
import select
from collections.abc import Callable
from typing import final

import trio

from wstrio._io.streams.fastpath.handback import HandBack

__all__ = ["ENABLED", "Handler", "Hub"]

log = logging.getLogger("wstrio.tunnel")

ENABLED = True
"""Private switch: the default of ``Hub(enabled=...)`` (tests turn it off)."""

Handler = Callable[[], HandBack | None]
"""Called when its socket is readable: ``None`` to stay in the hub, or why it leaves."""

# Events handled per wake-up before yielding to the rest of the server.
_BATCH = 256


@final
class _Visit:
    """One connection in the hub: its two sockets, the task waiting, and, once it leaves, why.

    The waiting task is woken with :func:`trio.lowlevel.reschedule` rather
    than through a :class:`trio.Event`: an idle tunnel in the hub then costs
    this object alone.
    """

    __slots__ = ("backend_fd", "client_fd", "handback", "task")

    def __init__(self, client_fd: int, backend_fd: int) -> None:
        self.client_fd = client_fd
        self.backend_fd = backend_fd
        self.task: trio.lowlevel.Task | None = None
        self.handback: HandBack | None = None

    def abort(self, _raise_cancel: object) -> trio.lowlevel.Abort:
        """Cancelled while waiting: never wake this task again (enter() unregisters the sockets)."""
        self.task = None
        return trio.lowlevel.Abort.SUCCEEDED


@final
class Hub:
    """A private epoll set, driven by one task (:meth:`run`)."""

    def __init__(self, *, enabled: bool | None = None) -> None:
        self.enabled = ENABLED if enabled is None else enabled
        self._epoll: select.epoll | None = None
        self._handlers: dict[int, Handler] = {}
        self._visits: dict[int, _Visit] = {}
        self.entered = 0
        """Connections that entered the hub so far (for tests and statistics)."""

    @property
    def available(self) -> bool:
        """True while :meth:`run` runs and the hub is enabled: connections may :meth:`enter`."""
        return self.enabled and self._epoll is not None

    async def enter(self, client_fd: int, backend_fd: int, on_client: Handler, on_backend: Handler) -> HandBack:
        """Let the hub move this connection's bytes until a handler hands it back.

        Args:
            client_fd: the client's socket; ``on_client()`` runs when it is readable.
            backend_fd: the backend's socket; ``on_backend()`` runs when it is readable.
            on_client: returns ``None`` to stay, or the hand-back value to leave.
            on_backend: likewise.

        Returns:
            why the connection left, and what it left pending.  Both sockets
            are unregistered by then.

        Cancellation: both sockets are unregistered and
        :class:`trio.Cancelled` propagates (nothing is pending: the handlers
        only leave bytes behind when they hand back).

        Error handling: a handler that raises (logged) and sockets that
        cannot be registered give the reason ``fault``; the hub and its
        other connections go on.
        """
        assert self._epoll is not None, "the hub is not running"
        visit = _Visit(client_fd, backend_fd)
        try:
            self._register(client_fd, on_client, visit)
            self._register(backend_fd, on_backend, visit)
        except (OSError, ValueError) as exc:
            self._unregister(visit)
            log.exception("cannot register fds %d and %d in the hub", client_fd, backend_fd)
            return HandBack("fault", error=exc)
        self.entered += 1
        visit.task = trio.lowlevel.current_task()
        try:
            await trio.lowlevel.wait_task_rescheduled(visit.abort)
        finally:
            self._unregister(visit)
        assert visit.handback is not None
        return visit.handback

    def _register(self, fd: int, handler: Handler, visit: _Visit) -> None:
        assert self._epoll is not None
        self._epoll.register(fd, select.EPOLLIN)  # level-triggered
        self._handlers[fd] = handler
        self._visits[fd] = visit

    def _unregister(self, visit: _Visit) -> None:
        """Stop watching both sockets of ``visit`` (idempotent)."""
        for fd in (visit.client_fd, visit.backend_fd):
            if self._visits.get(fd) is not visit:
                continue
            del self._visits[fd]
            del self._handlers[fd]
            if self._epoll is not None:
                with contextlib.suppress(OSError):
                    self._epoll.unregister(fd)

    def _leave(self, fd: int, handback: HandBack) -> None:
        visit = self._visits.get(fd)
        if visit is None:
            return
        # Unregister both sockets now: an event for the other one later in
        # this batch finds no handler, so a handler never runs after its
        # connection has left.
        self._unregister(visit)
        visit.handback = handback
        if visit.task is not None:
            trio.lowlevel.reschedule(visit.task)
            visit.task = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Dispatch readable sockets to their handlers until cancelled (run it in the server's nursery).

        ``task_status.started()`` is called once connections may enter.
        """
        self._epoll = epoll = select.epoll()
        fd = epoll.fileno()
        handlers = self._handlers
        task_status.started()
        try:
            while True:
                await trio.lowlevel.wait_readable(fd)
                for ready, _mask in epoll.poll(0, _BATCH):
                    handler = handlers.get(ready)
                    if handler is None:
                        continue
                    try:
                        handback = handler()
                    except Exception as exc:
                        log.exception("the hub's fast path failed on fd %d", ready)
                        handback = HandBack("fault", error=exc)
                    if handback is not None:
                        self._leave(ready, handback)
        finally:
            self._epoll = None
            for visit in list(self._visits.values()):
                # Only reached when the server is cancelled, so are the visitors.
                self._leave(visit.client_fd, HandBack("fault"))
            self._handlers.clear()
            self._visits.clear()
            trio.lowlevel.notify_closing(fd)
            epoll.close()
