"""Run the tunnel and relay tests on three transports: memory streams, plain sockets, and sockets in the hub.

* ``memory``: :func:`trio.testing.memory_stream_pair` (the generic Stream path);
* ``sockets``: :func:`socket.socketpair` (the file-descriptor fast path of
  :mod:`wstrio._io.streams.pipes`) with a running hub that is switched off
  (``Hub(enabled=False)``): every connection stays on its tasks;
* ``hub``: the same sockets with the hub on: connections start there and are
  handed back to their tasks.

The same assertions then prove the task path and the hub path.
"""

from __future__ import annotations

import socket
from typing import Literal

import trio
import trio.testing

from wstrio._io.streams.fastpath.hub import Hub

__all__ = ["MODES", "Mode", "Transport", "socket_stream_pair", "start_transport"]

Mode = Literal["memory", "sockets", "hub"]
MODES: tuple[Mode, ...] = ("memory", "sockets", "hub")


def socket_stream_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """Two connected plain sockets, as Trio streams (the caller closes them)."""
    a, b = socket.socketpair()
    return trio.SocketStream(trio.socket.from_stdlib_socket(a)), trio.SocketStream(trio.socket.from_stdlib_socket(b))


class Transport:
    """Makes connected stream pairs of one mode, and holds the hub they may use."""

    def __init__(self, mode: Mode, hub: Hub | None) -> None:
        self.mode = mode
        self.hub = hub
        self._sockets: list[trio.SocketStream] = []

    def pair(self) -> tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]:
        """(the test's end, the code under test's end) of one connection."""
        if self.mode == "memory":
            return trio.testing.memory_stream_pair()
        ours, theirs = socket_stream_pair()
        self._sockets += (ours, theirs)
        return ours, theirs

    @property
    def entered(self) -> int:
        """How many connections entered the hub so far."""
        return self.hub.entered if self.hub is not None else 0

    def close(self) -> None:
        for stream in self._sockets:
            stream.socket.close()


async def start_transport(mode: Mode, nursery: trio.Nursery) -> Transport:
    """A :class:`Transport`; for the socket modes, with a hub running in ``nursery``."""
    if mode == "memory":
        return Transport(mode, None)
    hub = Hub(enabled=mode == "hub")
    await nursery.start(hub.run)
    return Transport(mode, hub)
