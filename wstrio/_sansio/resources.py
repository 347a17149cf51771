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
    * one per backend connection: a request on a route with backends holds
      one; HTTP/1.1 has one request at a time per connection, HTTP/2 up to
      ``h2-max-concurrent-streams`` per connection, so the bound is
      ``max-tunnels`` when it is set (it counts HTTP/2 streams too), else
      ``max-connections`` times the streams HTTP/2 allows when HTTP/2 is on;
    * one listening socket per spawned backend process (``max-procs``), which
      wstrio keeps open to hand to a respawned process;
    * :data:`SPARE_FDS`.
    """
    listeners = len(config.listen)
    clients = config.max_connections
    max_tunnels = getattr(config, "max_tunnels", 0)
    per_connection = config.h2_max_concurrent_streams if config.http2 else 1
    backends = max_tunnels or clients * per_connection
    if not any(route.backends for route in config.routes):
        backends = 0
    spawned = sum(b.max_procs for route in config.routes for b in route.backends if b.spawned)
    return listeners + clients + backends + spawned + SPARE_FDS
