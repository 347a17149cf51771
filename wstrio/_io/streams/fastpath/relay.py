"""The raw relay's two handlers in the hub: copy what arrived to the other side.

Each handler reads what its socket has and writes it, unchanged, to the
other socket, without a task switch (see :mod:`wstrio._io.streams.fastpath.hub`).
At an EOF, an error or a write that would block it returns a
:class:`HandBack`, and the relay's pump tasks (:mod:`wstrio._io.streams.relay`)
take over.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import trio

from wstrio._io.streams.fastpath.handback import HandBack

if TYPE_CHECKING:
    from wstrio._io.streams.fastpath.hub import Handler
    from wstrio._io.streams.relay import _Relay

__all__ = ["relay_handlers"]

_CLIENT_EOF = HandBack("client_eof")
_BACKEND_EOF = HandBack("backend_eof")


def relay_handlers(relay: _Relay, client_fd: int, backend_fd: int) -> tuple[Handler, Handler]:
    """``(on_client, on_backend)`` for ``relay`` between these two sockets."""
    written = relay.written
    budget = relay.budget
    current_time = trio.current_time
    read, write = os.read, os.write

    def on_client() -> HandBack | None:
        try:
            data = read(client_fd, budget.read_size)
        except BlockingIOError:
            return None
        except OSError as exc:
            return HandBack("client_read_failed", error=exc)
        if not data:
            return _CLIENT_EOF
        relay.last_activity = current_time()
        try:
            n = write(backend_fd, data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            return HandBack("backend_write_failed", error=exc)
        written["backend"] += n
        if n < len(data):
            return HandBack("blocked", to_backend=data[n:])
        return None

    def on_backend() -> HandBack | None:
        try:
            data = read(backend_fd, budget.read_size)
        except BlockingIOError:
            return None
        except OSError as exc:
            return HandBack("backend_read_failed", error=exc)
        if not data:
            return _BACKEND_EOF
        relay.last_activity = current_time()
        try:
            n = write(client_fd, data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            return HandBack("client_write_failed", error=exc)
        written["client"] += n
        if n < len(data):
            return HandBack("blocked", to_client=data[n:])
        return None

    return on_client, on_backend
