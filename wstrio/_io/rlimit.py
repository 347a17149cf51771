"""Raise the soft ``RLIMIT_NOFILE`` to the hard limit, and say when it is too low.

``wstrio serve`` calls :func:`raise_nofile_limit` at start, as nginx's
``worker_rlimit_nofile`` and most servers do: the soft limit is often 1024,
far below what ``max-connections`` promises, while the hard limit (what an
unprivileged process may raise it to) is usually much higher.  The library
(:func:`wstrio.serve`) leaves the process's limits alone and only warns.
"""

from __future__ import annotations

import logging
import resource

from wstrio._config import ServerConfig
from wstrio._sansio.resources import fds_needed

__all__ = ["nofile_limit", "nofile_warning", "raise_nofile_limit"]

log = logging.getLogger("wstrio.server")


def nofile_limit() -> tuple[int, int]:
    """``(soft, hard)`` of ``RLIMIT_NOFILE`` (``RLIM_INFINITY`` as a large number)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinity = resource.RLIM_INFINITY
    return (soft if soft != infinity else 1 << 62, hard if hard != infinity else 1 << 62)


def raise_nofile_limit() -> tuple[int, int] | None:
    """Set the soft limit to the hard limit; returns ``(old soft, new soft)``, or ``None`` if nothing changed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        # macOS refuses RLIM_INFINITY (OPEN_MAX is the real ceiling): keep the soft limit.
        return None
    return soft, hard


def nofile_warning(config: ServerConfig) -> str | None:
    """A warning when the soft ``RLIMIT_NOFILE`` is below what ``config`` may need, else ``None``."""
    soft, hard = nofile_limit()
    need = fds_needed(config)
    if soft >= need:
        return None
    hint = (
        "raise the hard limit (systemd: LimitNOFILE=; a shell: ulimit -Hn) or lower max-connections/max-tunnels"
        if hard < need
        else "wstrio serve raises it to the hard limit at start; an embedding program should do the same"
    )
    return (
        f"the open-file limit is {soft} (hard {hard}), but this configuration may need {need} file descriptors"
        f" (see docs/deployment.md); {hint}"
    )
