"""The server side of a WebSocket, after the handshake.

:class:`WebSocketCodec` turns client bytes into a short list of events and
backend payloads into frames.  Parsing (masking, fragmentation, control-frame
rules, close codes, UTF-8 validation of client text) is wsproto's; the codec
only narrows wsproto's events to what a tunnel needs:

* :class:`Data` — payload bytes of TEXT/BINARY frames, streamed as they arrive
  (message boundaries are not kept, as in lighttpd: the backend sees a byte
  stream).  Memory stays bounded because wsproto hands over partial frames.
* :class:`Ping` / :class:`Pong`.
* :class:`Close` — the client's CLOSE, or a protocol error found while
  parsing (``error=True``, with wsproto's code: 1002, 1007, ...).

Server frames are never masked, so data frames are built here directly (a
2-10 byte header in front of the payload) rather than through wsproto's
general path, which copies the payload several times.

:class:`TextFramer` keeps text frames valid UTF-8 when the backend's reads
split a character: the incomplete tail is held back until the next read.

Never imports trio.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import final

import attrs
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, TextMessage
from wsproto.events import Ping as WsPing
from wsproto.events import Pong as WsPong
from wsproto.frame_protocol import CloseReason

__all__ = ["Close", "Data", "Ping", "Pong", "TextFramer", "WebSocketCodec", "encode_frame"]

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_pack_h = struct.Struct("!BBH").pack
_pack_q = struct.Struct("!BBQ").pack


def encode_frame(opcode: int, payload: bytes | bytearray) -> bytes:
    """One unmasked, final frame: what a server sends."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return _pack_h(0x80 | opcode, 126, n) + payload
    return _pack_q(0x80 | opcode, 127, n) + payload


@final
@attrs.frozen
class Data:
    """Payload bytes from a client data frame (possibly part of a frame)."""

    data: bytes


@final
@attrs.frozen
class Ping:
    """A PING from the client; answered with :meth:`WebSocketCodec.pong`."""

    payload: bytes


@final
@attrs.frozen
class Pong:
    """A PONG from the client."""

    payload: bytes


@final
@attrs.frozen
class Close:
    """The client closed (``error=False``) or broke the protocol (``error=True``).

    ``code`` is the code to answer with: for a protocol error, wsproto's
    verdict (1002 protocol error, 1007 invalid UTF-8, ...); for a client
    CLOSE, the code the client sent (1005 when it sent none).
    """

    code: int
    reason: str
    error: bool


Event = Data | Ping | Pong | Close


@final
class WebSocketCodec:
    """Server-side WebSocket framing for one connection (sans-I/O)."""

    def __init__(self, *, binary: bool, leftover: bytes = b"") -> None:
        self._conn = Connection(ConnectionType.SERVER)
        self._opcode = OP_BINARY if binary else OP_TEXT
        self.closed_by_client = False
        self.close_sent = False
        if leftover:
            self._conn.receive_data(leftover)

    @property
    def binary(self) -> bool:
        """True when backend data goes out in binary frames."""
        return self._opcode == OP_BINARY

    def receive_data(self, data: bytes | bytearray) -> None:
        """Feed bytes read from the client."""
        if self._conn.state is not ConnectionState.CLOSED:
            # wsproto only appends the data to a bytearray; no need to copy.
            self._conn.receive_data(data)  # type: ignore[arg-type]

    def events(self) -> Iterator[Event]:
        """The events the fed bytes complete, in order."""
        for event in self._conn.events():
            if isinstance(event, BytesMessage):
                if event.data:
                    yield Data(bytes(event.data))
            elif isinstance(event, TextMessage):
                if event.data:
                    yield Data(event.data.encode("utf-8"))
            elif isinstance(event, WsPing):
                yield Ping(bytes(event.payload))
            elif isinstance(event, WsPong):
                yield Pong(bytes(event.payload))
            elif isinstance(event, CloseConnection):
                # wsproto turns a parse failure into a CloseConnection with the
                # code to send, without the peer having sent a CLOSE; its state
                # then is still OPEN (a real CLOSE moves it to REMOTE_CLOSING).
                error = self._conn.state is ConnectionState.OPEN
                self.closed_by_client = not error
                yield Close(int(event.code), event.reason or "", error)
                return

    @property
    def can_send(self) -> bool:
        """False once a CLOSE has been sent."""
        return not self.close_sent

    def data(self, payload: bytes | bytearray) -> bytes:
        """A data frame (text or binary, as agreed) carrying ``payload``."""
        return encode_frame(self._opcode, payload)

    def ping(self, payload: bytes = b"") -> bytes:
        """A PING frame (payload at most 125 bytes)."""
        return encode_frame(OP_PING, payload[:125])

    def pong(self, payload: bytes) -> bytes:
        """A PONG frame echoing ``payload``."""
        return encode_frame(OP_PONG, payload[:125])

    def close(self, code: int, reason: str = "") -> bytes:
        """The CLOSE frame; afterwards :attr:`can_send` is False."""
        self.close_sent = True
        if code in (CloseReason.NO_STATUS_RCVD, CloseReason.ABNORMAL_CLOSURE, CloseReason.TLS_HANDSHAKE_FAILED):
            return encode_frame(OP_CLOSE, b"")
        raw = reason.encode("utf-8")[:123]
        # Never cut a UTF-8 sequence in the reason.
        raw = raw.decode("utf-8", "ignore").encode("utf-8")
        return encode_frame(OP_CLOSE, struct.pack("!H", code) + raw)


@final
class TextFramer:
    """Keeps text frames valid UTF-8 across backend reads.

    ``feed`` returns the bytes that form complete characters and holds back
    an incomplete sequence at the end (at most 3 bytes) for the next call.
    Bytes that can never be valid UTF-8 are replaced with U+FFFD, so a
    backend that writes Latin-1 into a text tunnel cannot make the browser
    fail the connection with 1007 (lighttpd sends them as they are).
    """

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes | bytearray) -> bytes:
        """The complete-character prefix of the pending bytes plus ``chunk``."""
        data = self._pending + chunk if self._pending else bytes(chunk)
        self._pending = b""
        cut = _incomplete_tail(data)
        if cut:
            self._pending = data[-cut:]
            data = data[:-cut]
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            data = data.decode("utf-8", "replace").encode("utf-8")
        return data

    def flush(self) -> bytes:
        """Whatever is held back (as U+FFFD), at the end of the stream."""
        data, self._pending = self._pending, b""
        return data.decode("utf-8", "replace").encode("utf-8") if data else b""


def _incomplete_tail(data: bytes | bytearray) -> int:
    """How many bytes at the end of ``data`` start a UTF-8 sequence not yet complete."""
    n = len(data)
    # Look back at most 3 bytes for the lead byte of the last sequence.
    for back in range(1, min(4, n + 1)):
        byte = data[n - back]
        if byte < 0x80:
            return 0
        if byte >= 0xC0:
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return back if need > back else 0
        # a continuation byte: keep looking for its lead byte
    return 0
