"""What a configuration needs of the operating system: file descriptors.

The arithmetic behind ``docs/deployment.md``'s advice and the warning
``wstrio serve`` and ``wstrio check`` print when ``RLIMIT_NOFILE`` is too
low.  Never imports trio.
"""

from __future__ import annotations

from wstrio._config import ServerConfig

__all__ = ["SPARE_FDS", "fds_needed"]

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
