"""Sockets-free servers: a memory listener and a memory backend connector."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import final

import trio
import trio.testing

from wstrio._sansio.backends.address import BackendAddress

__all__ = ["MemoryConnector", "MemoryListener"]


@final
class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose clients connect with :meth:`connect` (no sockets).

    Pass it to :func:`wstrio.serve_listeners`; then ``await
    listener.connect()`` gives the client's end of a new connection.
    """

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](0)
        self._closed = False

    async def connect(self) -> trio.abc.Stream:
        """Open a connection to the server; returns the client's stream."""
        client, server = trio.testing.lockstep_stream_pair()
        await self._send.send(server)
        return client

    async def accept(self) -> trio.abc.Stream:
        if self._closed:
            raise trio.ClosedResourceError
        return await self._receive.receive()

    async def aclose(self) -> None:
        self._closed = True
        await self._receive.aclose()
        await trio.lowlevel.checkpoint()


Handler = Callable[[trio.abc.Stream], Awaitable[None]]


@final
class MemoryConnector:
    """A backend connector that runs ``handler`` on memory streams instead of connecting.

    Every backend address reaches the same handler, in ``nursery``; pass the
    connector as ``connector=`` to :func:`wstrio.serve_listeners`.  Addresses
    listed in :attr:`refuse` fail as a refused connection would.
    """

    def __init__(self, nursery: trio.Nursery, handler: Handler) -> None:
        self._nursery = nursery
        self._handler = handler
        self.refuse: set[str] = set()
        self.connections = 0

    async def connect(self, address: BackendAddress) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        if str(address) in self.refuse:
            msg = f"connection refused by test: {address}"
            raise ConnectionRefusedError(msg)
        ours, theirs = trio.testing.lockstep_stream_pair()
        self.connections += 1
        self._nursery.start_soon(self._handler, theirs)
        return ours
