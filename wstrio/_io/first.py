"""First problem wins: how a group of tasks reports why it ended.

A tunnel, a relay and a proxied or CGI exchange each run a few tasks (one per
direction, a watchdog) in one nursery.  When any of them hits a problem, the
problem that happened *first* is the one to act on (the others are
consequences: a cancelled read, a closed stream), and the whole group stops.
Raising from each task would instead give an :class:`ExceptionGroup` of
cause and consequences in no useful order, so each task calls
:meth:`FirstProblem.report` and returns; the owner reads
:attr:`FirstProblem.problem` after the nursery has closed.
"""

from __future__ import annotations

from typing import Generic, TypeVar, final

import trio

__all__ = ["FirstProblem"]

T = TypeVar("T")


@final
class FirstProblem(Generic[T]):
    """Keeps the first problem reported and cancels the scope it guards.

    ``scope`` is the cancel scope of the task group (usually a nursery's);
    it may be attached after construction, and a report made before that is
    kept and acted on when it is attached.
    """

    __slots__ = ("_cancel_pending", "problem", "scope")

    def __init__(self, scope: trio.CancelScope | None = None) -> None:
        self.problem: T | None = None
        self.scope = scope
        self._cancel_pending = False

    def attach(self, scope: trio.CancelScope) -> None:
        """Guard ``scope`` from now on (cancelled at once if a problem is known)."""
        self.scope = scope
        if self._cancel_pending:
            scope.cancel()

    def report(self, problem: T) -> None:
        """Record ``problem`` unless one came first, and stop the group."""
        if self.problem is None:
            self.problem = problem
        if self.scope is not None:
            self.scope.cancel()
        else:
            self._cancel_pending = True

    def stop(self) -> None:
        """Stop the group without a problem (a normal end)."""
        if self.scope is not None:
            self.scope.cancel()
        else:
            self._cancel_pending = True
