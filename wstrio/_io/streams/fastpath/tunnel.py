"""A wstunnel tunnel's two handlers in the hub: plain data, moved without a task switch.

:func:`tunnel_handlers` builds, once per entry, the closures the hub calls
when the client's or the backend's socket is readable (see
:mod:`wstrio._io.streams.fastpath.hub`).  They do per message exactly what
the tunnel's tasks do, minus the awaiting: read, decode (client) or frame
(backend), write to the other side.  At the first thing that is not plain
data moving freely they return a :class:`HandBack` and the tunnel's tasks
(:mod:`wstrio._io.streams.tunnel`) take over; they never finish an ending
themselves, so each ending is finished in one place, on the task path.

This is the hot path (small messages): the closures keep what they use in
local cells, allocate nothing per message beyond the bytes they move, and
touch the tunnel only for its timestamps and counters.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import trio

from wstrio._io.streams.fastpath.handback import HandBack
from wstrio._io.streams.pipes import READ_SIZE
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
    codec = tunnel.codec
    receive_data = codec.receive_data
    events = codec.events
    frame = codec.data
    framer = tunnel.framer
    current_time = trio.current_time
    read, write = os.read, os.write

    def forward() -> HandBack | None:
        payload = b""
        others: list[Data | Ping | Pong | Close] | None = None
        for event in events():
            if isinstance(event, Data):
                payload = event.data  # events() gives all data first, as one event
            elif others is None:
                others = [event]
            else:
                others.append(event)
        if payload:
            try:
                written = write(backend_fd, payload)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                return HandBack("backend_write_failed", error=exc)
            tunnel.bytes_to_backend += written
            if written < len(payload):
                return HandBack("blocked", to_backend=payload[written:], events=tuple(others or ()))
        if others is not None:
            return HandBack("events", events=tuple(others))
        return None

    def on_client() -> HandBack | None:
        try:
            data = read(client_fd, READ_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            return HandBack("client_read_failed", error=exc)
        tunnel.last_client_read = current_time()
        if not data:
            return _CLIENT_EOF
        receive_data(data)
        return forward()

    def on_backend() -> HandBack | None:
        try:
            data = read(backend_fd, READ_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            return HandBack("backend_read_failed", error=exc)
        tunnel.last_backend_read = current_time()
        if not data:
            return _BACKEND_EOF
        if framer is not None:
            data = framer.feed(data)
            if not data:
                return None
        message = frame(data)
        try:
            written = write(client_fd, message)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            return HandBack("client_write_failed", error=exc)
        tunnel.sender.bytes_sent += written
        if written < len(message):
            return HandBack("blocked", to_client=message[written:])
        return None

    return forward, on_client, on_backend
