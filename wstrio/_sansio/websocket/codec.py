"""The server side of a WebSocket, after the handshake.

:class:`WebSocketCodec` turns client bytes into a short list of events and
backend payloads into frames:

* :class:`Data` — payload bytes of TEXT/BINARY frames.  All the payload
  bytes that one :meth:`~WebSocketCodec.receive_data` call completes come
  as **one** ``Data`` event, so the tunnel writes them to the backend with
  one ``send_all`` however many small frames arrived together.  Large
  frames are streamed: whatever part of a payload has arrived is passed on.
  Message boundaries are not kept (as in lighttpd: the backend sees a byte
  stream).
* :class:`Ping` / :class:`Pong`.
* :class:`Close` — the client's CLOSE, or a protocol error
  (``error=True``, with the close code to send: 1002, or 1007 for invalid
  UTF-8).  Nothing is parsed after it.

Why not wsproto's parser: it costs about 40 us per small frame (a
generator per frame, four copies of each payload), which alone would cap a
tunnel below a third of lighttpd's message rate.  This decoder implements
exactly the server side of RFC 6455 section 5 — frames must be masked, no
extensions (RSV bits are errors), lengths in their minimal encoding,
control frames at most 125 bytes and never fragmented, continuation rules, valid close codes, UTF-8 text — and
the tests check it against wsproto as an oracle.  Unmasking is done in bulk
(one big-integer XOR per chunk).

Server frames are never masked, so frames to the client are a 2-10 byte
header in front of the payload.

:class:`TextFramer` keeps text frames valid UTF-8 when the backend's reads
split a character: the incomplete tail is held back until the next read.

Never imports trio.
"""

from __future__ import annotations

import codecs
import os
import struct
from collections.abc import Callable, Iterator
from typing import final

import attrs

__all__ = ["Close", "Data", "Ping", "Pong", "TextFramer", "WebSocketCodec", "encode_frame"]

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

PROTOCOL_ERROR = 1002
INVALID_DATA = 1007
MESSAGE_TOO_BIG = 1009
NO_STATUS = 1005

_pack_h = struct.Struct("!BBH").pack
_pack_q = struct.Struct("!BBQ").pack
_unpack_h = struct.Struct("!H").unpack_from
_unpack_q = struct.Struct("!Q").unpack_from
_from_bytes = int.from_bytes
_utf8_decoder = codecs.getincrementaldecoder("utf-8")


def encode_frame(opcode: int, payload: bytes | bytearray) -> bytes:
    """One unmasked, final frame: what a server sends."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return _pack_h(0x80 | opcode, 126, n) + payload
    return _pack_q(0x80 | opcode, 127, n) + payload


def unmask_python(data: bytes | bytearray | memoryview, mask: bytes, offset: int = 0) -> bytes:
    """XOR ``data`` with the 4-byte ``mask``, starting ``offset`` bytes into the mask."""
    n = len(data)
    if not n:
        return b""
    if offset:
        mask = mask[offset:] + mask[:offset]
    key = (mask * ((n >> 2) + 1))[:n]
    return (_from_bytes(data, "little") ^ _from_bytes(key, "little")).to_bytes(n, "little")


unmask = unmask_python
if not os.environ.get("WSTRIO_NO_SPEEDUPS"):
    try:
        from wstrio._speedups import unmask  # type: ignore[assignment]  # the C version, same contract
    except ImportError:  # pragma: no cover - built without a compiler
        pass


def _valid_close_code(code: int) -> bool:
    # RFC 6455 7.4 and the IANA registry: codes a peer may put on the wire.
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


@final
@attrs.frozen
class Data:
    """Payload bytes from client data frames (see the module docstring)."""

    data: bytes


@final
@attrs.frozen
class Ping:
    """A PING from the client; answer with :meth:`WebSocketCodec.pong`."""

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

    For a client CLOSE, ``code`` is the code it sent (1005 when it sent
    none); for a protocol error, the code to close with.
    """

    code: int
    reason: str
    error: bool


Event = Data | Ping | Pong | Close


class _ProtocolError(Exception):
    def __init__(self, reason: str, code: int = PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.code = code


@final
class WebSocketCodec:
    """Server-side WebSocket framing for one connection (sans-I/O)."""

    def __init__(
        self,
        *,
        binary: bool,
        leftover: bytes = b"",
        max_frame_size: int = 0,
        max_message_size: int = 0,
        encode_message: Callable[[bytes], bytes] | None = None,
    ) -> None:
        """``encode_message``: keep message boundaries (a ``framing`` other than ``stream``):
        each client message is held until it is complete, then passed on as ``encode_message(message)``."""
        self._opcode = OP_BINARY if binary else OP_TEXT
        self._encode = encode_message
        self._parts: list[bytes] = []  # the message in progress, with encode_message
        # 0: no limit.  Checked against the declared lengths in frame headers,
        # so an oversized frame is refused before its payload is read.
        self._max_frame = max_frame_size
        self._max_message = max_message_size
        self._message_size = 0
        self.closed_by_client = False
        self.close_sent = False
        self._done = False  # a CLOSE or an error was parsed: stop
        self._buffer = b""
        # The frame whose payload is being streamed:
        self._remaining = 0
        self._mask = b""
        self._mask_offset = 0
        # The message in progress (fragmentation): its opcode, or 0.
        self._message = 0
        self._utf8: codecs.IncrementalDecoder | None = None
        self._frame_text = False  # the current frame belongs to a text message
        self._frame_fin = True
        self._data: list[bytes] = []
        self._events: list[Event] = []
        self.messages_received = 0
        """Data messages completed by the client (counted per frame header, for the access log)."""
        self.messages_sent = 0
        """Data messages framed for the client (one per :meth:`data` call)."""
        if leftover:
            self.receive_data(leftover)

    @property
    def binary(self) -> bool:
        """True when backend data goes out in binary frames."""
        return self._opcode == OP_BINARY

    def receive_data(self, data: bytes | bytearray) -> None:
        """Feed bytes read from the client; then read :meth:`events`."""
        if self._done:
            return
        buf = self._buffer + data if self._buffer else data
        self._buffer = b""
        try:
            self._parse(buf)
        except _ProtocolError as exc:
            self._done = True
            self._events.append(Close(exc.code, str(exc), True))

    def events(self) -> Iterator[Event]:
        """The events the fed bytes completed: data first (as one event), then control events."""
        if self._data:
            data = self._data[0] if len(self._data) == 1 else b"".join(self._data)
            self._data = []
            yield Data(data)
        if self._events:
            events, self._events = self._events, []
            yield from events

    def _payload(self, piece: bytes) -> None:
        if self._frame_text:
            assert self._utf8 is not None
            try:
                self._utf8.decode(piece, self._frame_fin and not self._remaining)
            except UnicodeDecodeError as exc:
                msg = f"invalid UTF-8 in text message: {exc.reason}"
                raise _ProtocolError(msg, INVALID_DATA) from None
        if piece:
            if self._encode is not None:
                self._parts.append(piece)
            else:
                self._data.append(piece)

    def _encoded(self) -> None:
        """A message is complete: pass it on, encoded (``encode_message``)."""
        assert self._encode is not None
        parts, self._parts = self._parts, []
        self._data.append(self._encode(parts[0] if len(parts) == 1 else b"".join(parts)))

    def _parse(self, buf: bytes | bytearray) -> None:
        n = len(buf)
        view = memoryview(buf)  # slices without copying, for unmask
        pos = 0
        while True:
            if self._remaining:
                take = min(self._remaining, n - pos)
                if not take:
                    return
                piece = unmask(view[pos : pos + take], self._mask, self._mask_offset)
                pos += take
                self._remaining -= take
                self._mask_offset = (self._mask_offset + take) & 3
                self._payload(piece)
                if self._remaining:
                    return
                if self._frame_fin:
                    self._message = 0
                    self._utf8 = None
                    self.messages_received += 1
                    if self._encode is not None:
                        self._encoded()
                continue
            if n - pos < 2:
                break
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b0 & 0x70:
                msg = "RSV bits set without a negotiated extension"
                raise _ProtocolError(msg)
            if not b1 & 0x80:
                msg = "client frames must be masked"
                raise _ProtocolError(msg)
            opcode = b0 & 0x0F
            fin = bool(b0 & 0x80)
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = _unpack_h(buf, pos + 2)[0]
                if length < 126:
                    msg = f"a {length}-byte payload length in the 16-bit field (RFC 6455 5.2: minimal encoding)"
                    raise _ProtocolError(msg)
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = _unpack_q(buf, pos + 2)[0]
                if length >> 63:
                    msg = "64-bit payload length with the most significant bit set"
                    raise _ProtocolError(msg)
                if length < 65536:
                    msg = f"a {length}-byte payload length in the 64-bit field (RFC 6455 5.2: minimal encoding)"
                    raise _ProtocolError(msg)
                head = 10
            if opcode >= 8:
                if opcode > OP_PONG:
                    msg = f"unknown opcode {opcode:#x}"
                    raise _ProtocolError(msg)
                if not fin:
                    msg = "fragmented control frame"
                    raise _ProtocolError(msg)
                if length > 125:
                    msg = f"control frame with a {length}-byte payload (at most 125)"
                    raise _ProtocolError(msg)
                if n - pos < head + 4 + length:
                    break
                mask = bytes(buf[pos + head : pos + head + 4])
                start = pos + head + 4
                payload = unmask(view[start : start + length], mask)
                pos = start + length
                if self._control(opcode, payload):
                    return
                continue
            if opcode > OP_BINARY:
                msg = f"unknown opcode {opcode:#x}"
                raise _ProtocolError(msg)
            # Wait for the whole header (mask included) before touching the
            # message state: this header is parsed again when more bytes come.
            if n - pos < head + 4:
                break
            if opcode == OP_CONTINUATION:
                if not self._message:
                    msg = "continuation frame without a message to continue"
                    raise _ProtocolError(msg)
                self._message_size += length
            else:
                if self._message:
                    msg = "new data frame while a fragmented message is in progress"
                    raise _ProtocolError(msg)
                self._message = opcode
                self._utf8 = _utf8_decoder() if opcode == OP_TEXT else None
                self._message_size = length
            if self._max_frame and length > self._max_frame:
                msg = f"a {length}-byte frame (max-frame-size is {self._max_frame})"
                raise _ProtocolError(msg, MESSAGE_TOO_BIG)
            if self._max_message and self._message_size > self._max_message:
                msg = f"a message of more than {self._max_message} bytes (max-message-size)"
                raise _ProtocolError(msg, MESSAGE_TOO_BIG)
            self._mask = bytes(buf[pos + head : pos + head + 4])
            self._mask_offset = 0
            self._frame_fin = fin
            self._frame_text = self._message == OP_TEXT
            self._remaining = length
            pos += head + 4
            if not length:
                self._payload(b"")
                if fin:
                    self._message = 0
                    self._utf8 = None
                    self.messages_received += 1
                    if self._encode is not None:
                        self._encoded()
        if pos < n:
            self._buffer = bytes(buf[pos:])

    def _control(self, opcode: int, payload: bytes) -> bool:
        """Handle a control frame; True if parsing must stop (CLOSE)."""
        if opcode == OP_PING:
            self._events.append(Ping(payload))
            return False
        if opcode == OP_PONG:
            self._events.append(Pong(payload))
            return False
        if not payload:
            code, reason = NO_STATUS, ""
        elif len(payload) == 1:
            msg = "CLOSE frame with a 1-byte payload"
            raise _ProtocolError(msg)
        else:
            code = _unpack_h(payload)[0]
            if not _valid_close_code(code):
                msg = f"invalid close code {code}"
                raise _ProtocolError(msg)
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                msg = "invalid UTF-8 in the close reason"
                raise _ProtocolError(msg, INVALID_DATA) from None
        self._done = True
        self.closed_by_client = True
        self._events.append(Close(code, reason, False))
        return True

    @property
    def can_send(self) -> bool:
        """False once a CLOSE has been sent."""
        return not self.close_sent

    def data(self, payload: bytes | bytearray) -> bytes:
        """A data frame (text or binary, as agreed) carrying ``payload``."""
        self.messages_sent += 1
        return encode_frame(self._opcode, payload)

    def ping(self, payload: bytes = b"") -> bytes:
        """A PING frame (payload at most 125 bytes)."""
        return encode_frame(OP_PING, payload[:125])

    def pong(self, payload: bytes) -> bytes:
        """A PONG frame echoing ``payload``."""
        return encode_frame(OP_PONG, payload[:125])

    def close(self, code: int, reason: str = "") -> bytes:
        """The CLOSE frame; afterwards :attr:`can_send` is False.

        Codes that must not appear on the wire (1005, 1006, 1015) give an
        empty CLOSE.
        """
        self.close_sent = True
        if code in (1005, 1006, 1015):
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
