"""A wstunnel tunnel's two handlers in the hub: plain data, moved without a task switch.

:func:`tunnel_handlers` builds, once per entry, the handlers the hub calls
when the client's or the backend's socket is readable (see
:mod:`wstrio._io.streams.fastpath.hub`).  They do per message exactly what
the tunnel's tasks do, minus the awaiting: read, decode (client) or frame
(backend), write to the other side.  At the first thing that is not plain
data moving freely they return a :class:`HandBack` and the tunnel's tasks
(:mod:`wstrio._io.streams.tunnel`) take over; they never finish an ending
themselves, so each ending is finished in one place, on the task path.

This is the hot path (small messages): the handlers keep what they use in
slots, allocate nothing per message beyond the bytes they move, and touch
the tunnel only for its timestamps and counters; they are methods of a
slotted object, not closures, to keep an idle tunnel small.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, final

from trio import current_time

from wstrio._io.streams.fastpath.handback import HandBack
from wstrio._sansio.websocket.codec import Close, Data, Ping, Pong

if TYPE_CHECKING:
    from wstrio._io.streams.fastpath.hub import Handler
    from wstrio._io.streams.tunnel import _Tunnel

__all__ = ["tunnel_handlers"]

_CLIENT_EOF = HandBack("client_eof")
_BACKEND_EOF = HandBack("backend_eof")


def tunnel_handlers(tunnel: _Tunnel, client_fd: int, backend_fd: int) -> tuple[Handler, Handler, Handler]:
    """``(forward, on_client, on_backend)`` for ``tunnel`` between these two sockets.

    ``forward()`` passes on what the codec already holds (bytes pipelined
    behind the handshake); call it once before entering the hub, and enter
    only if it returns ``None``.
    """
    handlers = _InHub(tunnel, client_fd, backend_fd)
    return handlers.forward, handlers.on_client, handlers.on_backend


@final
class _InHub:
    """One tunnel's handlers while it is in the hub.

    A slotted object with methods rather than closures: an idle tunnel in
    the hub costs one small object (closures cost a cell per captured name,
    about 2 KiB per tunnel, measured), and a slot is as quick to read as a
    cell.
    """

    __slots__ = ("backend_fd", "budget", "client_fd", "events", "frame", "framer", "receive_data", "sender", "tunnel")

    def __init__(self, tunnel: _Tunnel, client_fd: int, backend_fd: int) -> None:
        codec = tunnel.codec
        self.tunnel = tunnel
        self.budget = tunnel.budget
        self.sender = tunnel.sender
        self.client_fd = client_fd
        self.backend_fd = backend_fd
        self.receive_data = codec.receive_data
        self.events = codec.events
        self.frame = codec.data
        self.framer = tunnel.framer

    def forward(self) -> HandBack | None:
        payload = b""
        others: list[Data | Ping | Pong | Close] | None = None
        for event in self.events():
            if isinstance(event, Data):
                payload = event.data  # events() gives all data first, as one event
            elif others is None:
                others = [event]
            else:
                others.append(event)
        if payload:
            try:
                written = os.write(self.backend_fd, payload)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                return HandBack("backend_write_failed", error=exc)
            self.tunnel.bytes_to_backend += written
            if written < len(payload):
                return HandBack("blocked", to_backend=payload[written:], events=tuple(others or ()))
        if others is not None:
            return HandBack("events", events=tuple(others))
        return None

    def on_client(self) -> HandBack | None:
        try:
            data = os.read(self.client_fd, self.budget.read_size)
        except BlockingIOError:
            return None
        except OSError as exc:
            return HandBack("client_read_failed", error=exc)
        self.tunnel.last_client_read = current_time()
        if not data:
            return _CLIENT_EOF
        self.receive_data(data)
        return self.forward()

    def on_backend(self) -> HandBack | None:
        try:
            data = os.read(self.backend_fd, self.budget.read_size)
        except BlockingIOError:
            return None
        except OSError as exc:
            return HandBack("backend_read_failed", error=exc)
        self.tunnel.last_backend_read = current_time()
        if not data:
            return _BACKEND_EOF
        framer = self.framer
        if framer is not None:
            data = framer.feed(data)
            if not data:
                return None
        message = self.frame(data)
        try:
            written = os.write(self.client_fd, message)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            return HandBack("client_write_failed", error=exc)
        self.sender.bytes_sent += written
        if written < len(message):
            return HandBack("blocked", to_client=message[written:])
        return None
