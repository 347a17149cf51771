"""Message framing between WebSocket messages and a backend's byte stream (``framing =``).

A WebSocket carries messages; a backend (a TCP or unix socket, a spawned
program's standard input and output) carries bytes.  ``framing`` says how
one maps to the other:

* ``stream`` (the default for ``wstunnel``): no mapping.  Client payload
  bytes go to the backend as they come; whatever one backend read returns
  is one message.  Message boundaries are not kept (lighttpd's behaviour,
  and the hub's fast path).
* ``lines`` (the default for ``process``, websocketd's behaviour): each
  client message is written with ``\\n`` after it (unless it ends with one
  already: a browser page that sends ``"1\\n"`` is not given an empty line
  too); each line the backend writes is one message, without its ``\\n``
  (or ``\\r\\n``).
* ``nul``: the same with a NUL byte as the delimiter.
* ``length-prefixed``: each message is preceded by its length, big-endian,
  in ``length-bytes`` (2, 4 or 8) bytes, both ways.

A message from the backend longer than ``max-message-size`` is an error
for ``length-prefixed`` (the declared length is refused before anything is
buffered: CLOSE 1011), and for ``lines`` and ``nul`` it is sent in pieces of
``max-message-size`` bytes (a backend that never writes a newline cannot
make wstrio buffer without bound).  In text mode every message is valid
UTF-8: bytes that are not are replaced with U+FFFD, as for ``stream``.

Never imports trio.
"""

from __future__ import annotations

from typing import Literal, final, get_args

import attrs

__all__ = ["DEFAULT_MAX_MESSAGE", "FRAMINGS", "Framing", "FramingError", "MessageSplitter", "FramingName"]

FramingName = Literal["stream", "lines", "nul", "length-prefixed"]
FRAMINGS: tuple[str, ...] = get_args(FramingName)
"""The ``framing`` values a route accepts."""
DEFAULT_MAX_MESSAGE = 1 << 20
"""The largest backend message of a framed route when ``max-message-size`` is 0: 1 MiB."""


class FramingError(Exception):
    """The backend broke the framing (a length over ``max-message-size``)."""


@final
@attrs.frozen
class Framing:
    """A message framing other than ``stream``."""

    kind: Literal["lines", "nul", "length-prefixed"]
    length_bytes: int = 4
    """``length-bytes``: the size of a ``length-prefixed`` header."""
    max_message_size: int = DEFAULT_MAX_MESSAGE
    """The longest message the backend may send (the route's ``max-message-size``, or 1 MiB)."""
    flush_timeout: float = 0.0
    """``flush-timeout``: seconds after which a partial line is sent as it is (0: wait for its end)."""

    def encode(self, message: bytes) -> bytes:
        """A client message as the backend gets it."""
        if self.kind == "lines":
            return message if message.endswith(b"\n") else message + b"\n"
        if self.kind == "nul":
            return message if message.endswith(b"\0") else message + b"\0"
        return len(message).to_bytes(self.length_bytes, "big") + message

    def splitter(self, text: bool) -> MessageSplitter:
        """A new splitter for the backend's bytes (``text``: messages become valid UTF-8)."""
        return MessageSplitter(self, text)


def _valid(message: bytes) -> bytes:
    try:
        message.decode("utf-8")
    except UnicodeDecodeError:
        return message.decode("utf-8", "replace").encode("utf-8")
    return message


@final
class MessageSplitter:
    """Cuts a backend's bytes into messages (see the module docstring)."""

    def __init__(self, framing: Framing, text: bool) -> None:
        self.framing = framing
        self.text = text
        self._buffer = bytearray()
        self._delimiter = {"lines": b"\n", "nul": b"\0"}.get(framing.kind)

    @property
    def pending(self) -> bool:
        """Whether bytes of an unfinished message are held."""
        return bool(self._buffer)

    def _out(self, message: bytes) -> bytes:
        return _valid(message) if self.text else message

    def feed(self, chunk: bytes | bytearray) -> list[bytes]:
        """The messages ``chunk`` completes (in order).

        Raises:
            FramingError: a ``length-prefixed`` header declares more than ``max-message-size``.
        """
        buffer = self._buffer
        buffer += chunk
        out: list[bytes] = []
        limit = self.framing.max_message_size
        delimiter = self._delimiter
        if delimiter is not None:
            start = 0
            while True:
                end = buffer.find(delimiter, start)
                if end < 0:
                    break
                line = bytes(buffer[start:end])
                if delimiter == b"\n" and line.endswith(b"\r"):
                    line = line[:-1]
                while len(line) > limit:
                    out.append(self._out(line[:limit]))
                    line = line[limit:]
                out.append(self._out(line))
                start = end + 1
            del buffer[:start]
            while len(buffer) >= limit:
                out.append(self._out(bytes(buffer[:limit])))
                del buffer[:limit]
            return out
        size = self.framing.length_bytes
        while len(buffer) >= size:
            length = int.from_bytes(buffer[:size], "big")
            if length > limit:
                msg = f"the backend announced a {length}-byte message (max-message-size is {limit})"
                raise FramingError(msg)
            if len(buffer) < size + length:
                break
            out.append(self._out(bytes(buffer[size : size + length])))
            del buffer[: size + length]
        return out

    def flush(self) -> bytes | None:
        """The unfinished message, as it is (the backend ended, or ``flush-timeout`` passed), or None.

        For ``length-prefixed`` there is none to send: an incomplete message is dropped.
        """
        if not self._buffer:
            return None
        data = bytes(self._buffer)
        self._buffer.clear()
        if self._delimiter is None:
            return None
        return self._out(data)
