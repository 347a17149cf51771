"""Where a backend is reached: one address type for every kind of backend, without I/O.

Every backend (a TCP host, a unix socket, a process of a spawned pool, an
in-process app) is reached at a :class:`BackendAddress`; a
:class:`~wstrio._io.backends.connect.BackendConnector` turns one into a byte
stream.  :func:`backend_address` names the address of process ``index`` of
a backend as lighttpd does.

Never imports trio.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, final

import attrs

if TYPE_CHECKING:
    from wstrio._config import Backend

__all__ = ["BackendAddress", "app_address", "backend_address"]


@final
@attrs.frozen
class BackendAddress:
    """Where a backend (or one process of a spawned pool) is reached.

    ``family`` is ``AF_INET``/``AF_INET6`` with a ``(host, port)`` address,
    ``AF_UNIX`` with a socket path, or ``AF_UNSPEC`` for an in-process app,
    whose address is the backend's name.
    """

    family: int
    address: str | tuple[str, int]

    def __str__(self) -> str:
        if self.family == socket.AF_UNSPEC:
            return str(self.address)  # an in-process app
        if isinstance(self.address, str):
            return f"unix:{self.address}"
        return f"{self.address[0]}:{self.address[1]}"


def backend_address(backend: Backend, index: int = 0) -> BackendAddress:
    """``<socket>-<index>`` or ``(host, port + index)`` for a spawned pool, as lighttpd names them.

    A backend that is not spawned is one process at exactly its configured
    address (lighttpd reference section 3.3): no ``-<index>`` suffix.  An
    in-process app is addressed by its name.
    """
    if backend.app is not None:
        return app_address(backend)
    if backend.socket is not None:
        if not backend.spawned:
            return BackendAddress(socket.AF_UNIX, str(backend.socket))
        return BackendAddress(socket.AF_UNIX, f"{backend.socket}-{index}")
    assert backend.host is not None
    assert backend.port is not None
    family = socket.AF_INET6 if ":" in backend.host else socket.AF_INET
    return BackendAddress(family, (backend.host, backend.port + (index if backend.spawned else 0)))


def app_address(backend: Backend) -> BackendAddress:
    """The address of an in-process app backend: its name, for logs."""
    return BackendAddress(socket.AF_UNSPEC, backend.name)
