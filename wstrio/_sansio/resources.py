"""What a configuration needs of the operating system: file descriptors.

The arithmetic behind ``docs/deployment.md``'s advice and the warning
``wstrio serve`` and ``wstrio check`` print when ``RLIMIT_NOFILE`` is too
low, and :class:`AcceptBackoff`, how the accept loop waits while the
process is out of them.  Never imports trio.
"""

from __future__ import annotations

from typing import final

from wstrio._config import ServerConfig

__all__ = ["SPARE_FDS", "AcceptBackoff", "fds_needed"]

SPARE_FDS = 64
"""Descriptors kept for everything else: logs, the epoll and wakeup fds, static files being sent, CGI pipes."""


def fds_needed(config: ServerConfig) -> int:
    """File descriptors one wstrio process may hold with ``config`` fully loaded.

    * one per listener;
    * one per client connection (``max-connections``);
    * one per backend connection.  WebSockets hold theirs for as long as
      they last, and ``max-tunnels`` (default ``max-connections``) bounds
      them over HTTP/1.1 and HTTP/2 together; a plain request on a proxy,
      SCGI or FastCGI route holds one while it is answered, at most one per
      HTTP/1.1 connection, so with such routes ``max-connections`` more
      (HTTP/2 plain requests are short and not counted);
    * one listening socket per spawned backend process (``max-procs``), which
      wstrio keeps open to hand to a respawned process;
    * :data:`SPARE_FDS`.
    """
    listeners = len(config.listen)
    clients = config.max_connections
    backends = 0
    if any(route.backends for route in config.routes):
        backends = config.effective_max_tunnels
    if any(route.handler in ("proxy", "scgi", "fastcgi") for route in config.routes):
        backends += clients
    spawned = sum(b.max_procs for route in config.routes for b in route.backends if b.spawned)
    return listeners + clients + backends + spawned + SPARE_FDS


@final
class AcceptBackoff:
    """The accept loop's waits while ``accept()`` fails for want of resources.

    EMFILE, ENFILE, ENOBUFS and ENOMEM are wstrio's own state, not the
    client's: the loop waits and tries again, first after :attr:`FIRST`
    seconds, each wait doubling up to :attr:`LONGEST`, and says so once per
    *episode* (from the first failure to the next accept that works), not on
    every retry.

    Use: on a failure call :meth:`failed` (the delay to sleep, and whether
    to log the start of an episode); on a success call :meth:`succeeded`
    (``None``, or the episode's length and failure count to log its end).
    """

    FIRST = 0.05
    LONGEST = 2.0

    def __init__(self) -> None:
        self._delay = 0.0
        self._since: float | None = None
        self._failures = 0

    @property
    def in_episode(self) -> bool:
        """True between a failure and the next success."""
        return self._since is not None

    def failed(self, now: float) -> tuple[float, bool]:
        """Record a failed accept at ``now``: ``(seconds to wait, first of its episode)``."""
        first = self._since is None
        if first:
            self._since = now
            self._delay = self.FIRST
        else:
            self._delay = min(self._delay * 2, self.LONGEST)
        self._failures += 1
        return self._delay, first

    def succeeded(self, now: float) -> tuple[float, int] | None:
        """Record an accept that worked: the ended episode's ``(seconds, failures)``, or ``None``."""
        if self._since is None:
            return None
        ended = (now - self._since, self._failures)
        self._since = None
        self._failures = 0
        self._delay = 0.0
        return ended
