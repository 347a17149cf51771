"""What the hub gives back when a tunnel or relay leaves it: one immutable value.

A tunnel or relay in the hub (:meth:`wstrio._io.streams.fastpath.hub.Hub.enter`)
has no state of its own about the hub: everything the task path needs to
carry on (or to end) travels in one :class:`HandBack`.  Its :attr:`~HandBack.why`
says why the hub let go, and each caller finishes each reason in one place.
"""

from __future__ import annotations

from typing import Literal, final

import attrs

from wstrio._sansio.websocket.codec import Close, Data, Ping, Pong

__all__ = ["HandBack", "Why"]

Why = Literal[
    "blocked",
    "events",
    "client_eof",
    "backend_eof",
    "client_read_failed",
    "client_write_failed",
    "backend_read_failed",
    "backend_write_failed",
    "fault",
]
"""Why the hub handed the connection back:

* ``blocked``: a write would have blocked (backpressure is the tasks' job);
  what was not written is in :attr:`HandBack.to_client` or
  :attr:`HandBack.to_backend`.
* ``events``: the client sent something that is not plain data (a control
  frame, a CLOSE, a protocol error), in :attr:`HandBack.events`.
* ``client_eof`` / ``backend_eof``: that side's read found the end of its stream.
* ``client_read_failed`` ... ``backend_write_failed``: that operation raised
  :class:`OSError` (in :attr:`HandBack.error`).
* ``fault``: the hub itself failed for this connection: a handler raised (a
  bug, logged with its traceback) or the sockets could not be registered.
  The connection's state is not trustworthy: end it (1011 for a tunnel).
"""


@final
@attrs.frozen
class HandBack:
    """Why a connection left the hub, and what it left pending."""

    why: Why
    to_client: bytes = b""
    """Bytes that must reach the client before anything else (the rest of a
    frame half-written when the client's socket filled up)."""
    to_backend: bytes = b""
    """Bytes that must reach the backend before anything else."""
    events: tuple[Data | Ping | Pong | Close, ...] = ()
    """Decoded client events the hub does not handle (never :class:`Data`:
    data is written, or left in :attr:`to_backend`)."""
    error: Exception | None = None
    """The exception behind a ``*_failed`` or ``fault`` reason."""
