"""systemd integration without libsystemd: readiness notification and socket activation.

**Notification** (``Type=notify``): :func:`notify` sends a datagram to
``$NOTIFY_SOCKET`` (a unix socket path, or ``@name`` in the abstract
namespace), as ``sd_notify(3)`` does.  The CLI sends ``READY=1`` once every
listener is bound and the spawned pools are up, ``RELOADING=1`` and
``READY=1`` around a SIGHUP, ``STOPPING=1`` when a shutdown starts, and a
``STATUS=`` line with the open connections and tunnels every few seconds
(``systemctl status wstrio`` shows it).  Without ``$NOTIFY_SOCKET`` every
call does nothing.

**Socket activation** (``wstrio.socket`` units): :func:`inherited_sockets`
takes the listening sockets systemd passed (``LISTEN_PID``, ``LISTEN_FDS``,
``LISTEN_FDNAMES``; fds from 3 on, as ``sd_listen_fds(3)``), once, and
clears the variables so that programs wstrio starts do not take them for
theirs.  A listen address ``"systemd"`` serves all of them, ``"systemd:name"``
those named ``FileDescriptorName=name`` in the socket unit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from typing import final

import attrs

__all__ = ["InheritedSocket", "inherited_sockets", "notify", "reloading", "take_notify_socket", "taken_fds"]

log = logging.getLogger("wstrio.server")

SD_LISTEN_FDS_START = 3


_NOTIFY_SOCKET: str | None = None


def take_notify_socket() -> str | None:
    """Take ``$NOTIFY_SOCKET`` out of the environment (once, at start) for :func:`notify`.

    So that workers and spawned backends, which inherit the environment, do
    not think they are the service (``sd_notify``'s ``unset_environment``).
    """
    global _NOTIFY_SOCKET
    taken = os.environ.pop("NOTIFY_SOCKET", None)
    if taken:
        _NOTIFY_SOCKET = taken
    return _NOTIFY_SOCKET


def notify(message: str) -> bool:
    """Send ``message`` (``KEY=value`` lines) to systemd; False without a notify socket or on failure."""
    address = _NOTIFY_SOCKET
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.debug("sd_notify %r failed: %s", message, exc)
        return False
    return True


def reloading() -> None:
    """``RELOADING=1`` with the monotonic time systemd asks for (systemd >= 253 checks it)."""
    notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")


@final
@attrs.frozen
class InheritedSocket:
    """One socket systemd passed."""

    fd: int
    name: str
    """``FileDescriptorName=`` of the socket unit (systemd's default: the unit's name)."""


_TAKEN: list[InheritedSocket] | None = None


def inherited_sockets(environ: dict[str, str] | None = None) -> list[InheritedSocket]:
    """The sockets systemd passed to this process (read once; the variables are then removed).

    ``environ`` is for tests (default: ``os.environ``, which is cleared of
    ``LISTEN_*``).
    """
    global _TAKEN
    env = os.environ if environ is None else environ
    if environ is None and _TAKEN is not None:
        return _TAKEN
    found: list[InheritedSocket] = []
    with contextlib.suppress(ValueError):
        if int(env.get("LISTEN_PID", "0")) == os.getpid():
            count = int(env.get("LISTEN_FDS", "0"))
            names = env.get("LISTEN_FDNAMES", "").split(":") if env.get("LISTEN_FDNAMES") else []
            for i in range(count):
                fd = SD_LISTEN_FDS_START + i
                try:
                    os.set_inheritable(fd, False)
                except OSError:  # LISTEN_FDS counts an fd that is not open: nothing passed there
                    continue
                found.append(InheritedSocket(fd, names[i] if i < len(names) else "unknown"))
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(key, None)
    if environ is None:
        _TAKEN = found
    return found


def taken_fds() -> set[int]:
    """The fds :func:`inherited_sockets` has taken so far (without reading, or clearing, the environment)."""
    return {s.fd for s in _TAKEN or ()}
