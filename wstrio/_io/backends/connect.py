"""The backend seam: how a byte stream to a backend is opened.

Every backend, TCP, unix socket or spawned, ends up as a
:class:`trio.abc.Stream` from one seam, :class:`BackendConnector`, so tests
and embedders can inject memory streams (``connector=`` of
:func:`wstrio.serve`).  :class:`SocketConnector` is the default.

An in-process app (``Backend(app=...)``) is not connected to: it gets one
end of a real socket pair (:func:`open_app_stream_pair`) and the tunnel the
other, so the app's writes are bounded by the kernel's socket buffers (a
slow client bounds the app's memory as with any backend), and the tunnel
moves its bytes with the same socket fast path as for a network backend.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from typing import TYPE_CHECKING, Protocol, final

import trio

if TYPE_CHECKING:
    from wstrio._config import App
    from wstrio._sansio.backends.address import BackendAddress
    from wstrio._sansio.http.request import Request

__all__ = [
    "BacklogFull",
    "BackendConnector",
    "SocketConnector",
    "open_app_stream_pair",
    "open_unix_stream",
    "run_app",
    "set_nodelay",
]

log = logging.getLogger("wstrio.backend")


class BackendConnector(Protocol):
    """Opens a byte stream to a backend address (the injectable seam)."""

    async def connect(self, address: BackendAddress) -> trio.abc.Stream:
        """Connect to ``address``.

        Raises:
            OSError: the connection failed (refused, unreachable, ...).
        """
        ...


UNIX_BACKLOG_RETRIES = (0.005, 0.02, 0.05)
"""Seconds to wait before each new attempt when a unix socket's accept queue is full."""


class BacklogFull(ConnectionRefusedError):
    """A unix socket backend's accept queue is full (its ``connect()`` said EAGAIN)."""


async def open_unix_stream(path: str) -> trio.SocketStream:
    """Connect to the unix socket ``path``; a full accept queue is a failed connect.

    A non-blocking ``connect()`` to a unix socket whose listen backlog is
    full fails with EAGAIN.  :func:`trio.open_unix_socket` takes that for
    "in progress" and returns a socket that is not connected, so a client
    got a 101 with nothing behind it.  Here it is retried a few times
    (:data:`UNIX_BACKLOG_RETRIES`), then raised as :class:`BacklogFull`, a
    failed connect like any other (the next backend, or 503).

    Raises:
        OSError: the connection failed (no such socket, refused, backlog full).
    """
    await trio.lowlevel.checkpoint()
    delays = iter(UNIX_BACKLOG_RETRIES)
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.connect(path)  # a unix connect completes at once, or fails
        except BlockingIOError:
            sock.close()
            delay = next(delays, None)
            if delay is None:
                msg = f"{path}: the backend's accept queue is full (listen backlog)"
                raise BacklogFull(errno.EAGAIN, msg) from None
            await trio.sleep(delay)
            continue
        except BaseException:
            sock.close()
            raise
        return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


@final
class SocketConnector:
    """The default connector: TCP and unix sockets."""

    async def connect(self, address: BackendAddress) -> trio.abc.Stream:
        if isinstance(address.address, str):
            return await open_unix_stream(address.address)
        host, port = address.address
        # TCP_NODELAY is set by trio; lighttpd sets it for tunnels as well.
        return await trio.open_tcp_stream(host, port)


def set_nodelay(stream: trio.abc.Stream) -> None:
    """Set TCP_NODELAY on a TCP socket stream (a no-op for anything else)."""
    sock = getattr(stream, "socket", None)
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def open_app_stream_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """Two connected socket streams: ``(ours, the app's)``.

    Resource handling: the caller closes both (on every path).

    Raises:
        OSError: no socket pair could be made (out of file descriptors).
    """
    a, b = socket.socketpair()
    try:
        ours = trio.SocketStream(trio.socket.from_stdlib_socket(a))
        theirs = trio.SocketStream(trio.socket.from_stdlib_socket(b))
    except BaseException:
        a.close()
        b.close()
        raise
    return ours, theirs


async def run_app(app: App, stream: trio.abc.Stream, request: Request, name: str) -> None:
    """Run an in-process app on its end of the stream pair; closes ``stream``.

    Error handling: the app's own exception is logged, never raised; a
    client that went away while the app was writing is not an error.
    """
    try:
        async with stream:
            await app(stream, request)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client went away while the app was writing
    except Exception:
        log.exception("in-process backend %s failed", name)
