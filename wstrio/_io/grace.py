"""The graceful-shutdown budget, and the way to cut it short.

When a server is cancelled, each connection says goodbye inside a shielded,
bounded scope: a tunnel sends CLOSE 1001 and waits up to
``shutdown-timeout`` for the client's CLOSE, an HTTP/2 connection sends
GOAWAY and lets its streams finish.  Those scopes are made by
:func:`grace_scope`, which registers them per Trio run, so
:func:`force_shutdown` (the CLI calls it on a second SIGINT or SIGTERM) can
cancel every one of them at once, and every later one starts cancelled:
the process then closes its sockets and exits without waiting.

Only the waits that can last (``shutdown-timeout``) use it; the short,
bounded clean-ups (an HTTP/2 stream's last frame, a TLS close_notify,
stopping a process) still run, so nothing is leaked on the forced path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import final

import trio

__all__ = ["force_shutdown", "grace_scope", "shutdown_forced"]


@final
class _Grace:
    def __init__(self) -> None:
        self.forced = False
        self.scopes: set[trio.CancelScope] = set()


_GRACE: trio.lowlevel.RunVar[_Grace] = trio.lowlevel.RunVar("wstrio_grace")


def _current() -> _Grace:
    try:
        return _GRACE.get()
    except LookupError:
        grace = _Grace()
        _GRACE.set(grace)
        return grace


@contextlib.contextmanager
def grace_scope(seconds: float) -> Iterator[trio.CancelScope]:
    """A shielded scope that ends after ``seconds``, or at :func:`force_shutdown`.

    Use it as ``trio.move_on_after(seconds, shield=True)`` is used: the body
    is protected from the shutdown's cancellation, but not for longer than
    ``seconds`` and not past a forced shutdown.
    """
    grace = _current()
    scope = trio.CancelScope(shield=True, deadline=trio.current_time() + seconds)
    if grace.forced:
        scope.cancel()
    grace.scopes.add(scope)
    try:
        with scope:
            yield scope
    finally:
        grace.scopes.discard(scope)


def force_shutdown() -> None:
    """End every graceful wait of this Trio run now, and every later one at once."""
    grace = _current()
    grace.forced = True
    for scope in list(grace.scopes):
        scope.cancel()


def shutdown_forced() -> bool:
    """True once :func:`force_shutdown` was called in this Trio run."""
    return _current().forced
