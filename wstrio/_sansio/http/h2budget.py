"""HTTP/2 flood budgets: what a connection may cost wstrio without asking for anything.

Never imports trio; the caller passes the time in.

Theory of operation
-------------------
Some frames cost the server work and give the client nothing it asked for:
SETTINGS (each answered by an ACK), PING (each answered), RST_STREAM,
WINDOW_UPDATE, PRIORITY and unknown extension frames, DATA with no data and
no END_STREAM, CONTINUATION with no header bytes.  Each has a legitimate use,
and a client sending them by the thousand is the family of floods of
CVE-2019-9512..9518 (ping, settings, reset, empty frames), CVE-2023-44487
(rapid reset: open a stream, reset it at once, repeat) and the 2025
"MadeYouReset" (CVE-2025-8671: frames that make the *server* reset the
stream, such as DATA on a closed stream or a WINDOW_UPDATE that overflows a
stream's window, while the work the stream started goes on).

After CVE-2023-44487 the servers we compare with chose:

* nginx: payload bytes must stay above 1/8 of all bytes received (plus 1 MiB
  of slack), and at most ``2 x concurrent_streams`` new streams per read;
* Go's x/net/http2: at most ``maxConcurrentStreams`` handlers at once, more
  than that queued and the connection closed with ENHANCE_YOUR_CALM when
  the queue is long; at most 10,000 control frames queued for writing;
* Varnish: a leaky bucket of rapid resets (``h2_rapid_reset_limit`` = 100
  per ``h2_rapid_reset_period`` = 60 s), then GOAWAY ENHANCE_YOUR_CALM;
* h2o and Apache mod_http2: a budget of resets per connection that useful
  work (responses) refills, and fewer streams served in parallel meanwhile.

wstrio combines them in one **token bucket** per connection
(:class:`H2Budget`): it holds at most :data:`BURST` units and refills at
:data:`RATE` units per second.  Every frame above costs :data:`FRAME_COST`
(a SETTINGS frame also one more per :data:`SETTINGS_PER_UNIT` entries),
and so do a stream the client resets while wstrio still works on it (rapid
reset, on top of its RST_STREAM frame) and every RST_STREAM wstrio sends
because of a client's frames (MadeYouReset, REFUSED_STREAM beyond the
stream limit).  Useful work refills the bucket: each response head wstrio
sends (:data:`RESPONSE_CREDIT`), each DATA frame with data that wstrio sends
(:data:`DATA_SENT_CREDIT`: a client may answer each with a stream and a
connection WINDOW_UPDATE), each KiB of data received (:data:`DATA_RECEIVED_CREDIT`).
The bucket never holds more than :data:`BURST`, so credit cannot be banked
for a later flood.  When a cost takes the bucket below zero the budget is
*exhausted*: the caller sends GOAWAY ENHANCE_YOUR_CALM and stops reading.

**Bounded work.**  :meth:`H2Budget.received` sees the raw bytes before h2
parses them (only the 9-byte frame headers, and the first payload byte of a
padded DATA frame), and tells the caller how many bytes may go to h2: the
frame that exhausts the budget and everything after it are never parsed, so
h2 never answers more PINGs or SETTINGS than the bucket allows.  Costs known
only from h2's events (rapid resets, resets h2 sends) are charged after the
bytes of one read were parsed: one read's worth at most.
"""

from __future__ import annotations

from typing import Final, final

import attrs

__all__ = [
    "BURST",
    "DATA_RECEIVED_CREDIT",
    "DATA_SENT_CREDIT",
    "FRAME_COST",
    "PREFACE_SIZE",
    "RATE",
    "RESPONSE_CREDIT",
    "SETTINGS_PER_UNIT",
    "FrameHead",
    "FrameScanner",
    "H2Budget",
]

BURST: Final = 500.0
"""Units a connection may spend at once (and the most the bucket holds)."""
RATE: Final = 100.0
"""Units per second the bucket refills with, whatever the client does."""
FRAME_COST: Final = 1.0
"""What one unproductive frame, rapid reset or provoked RST_STREAM costs."""
SETTINGS_PER_UNIT: Final = 8
"""A SETTINGS frame costs one more unit per this many entries (each is work for h2)."""
RESPONSE_CREDIT: Final = 2.0
"""Refilled for each response head (HEADERS) wstrio sends."""
DATA_SENT_CREDIT: Final = 2.0
"""Refilled for each DATA frame with data wstrio sends."""
DATA_RECEIVED_CREDIT: Final = 1.0
"""Refilled for each KiB of DATA payload received."""
PREFACE_SIZE: Final = 24
"""Length of the client connection preface, which precedes the first frame."""

_HEAD = 9
_DATA = 0x0
_HEADERS = 0x1
_RST_STREAM = 0x3
_SETTINGS = 0x4
_GOAWAY = 0x7
_CONTINUATION = 0x9
_END_STREAM = 0x1
_PADDED = 0x8

_KINDS: Final = {
    0x2: "PRIORITY",
    _RST_STREAM: "RST_STREAM",
    _SETTINGS: "SETTINGS",
    0x5: "PUSH_PROMISE",
    0x6: "PING",
    0x8: "WINDOW_UPDATE",
}


@attrs.frozen
class FrameHead:
    """A frame's header, as :class:`FrameScanner` found it."""

    type: int
    """The frame type (RFC 9113 section 6; unknown types are extensions)."""
    flags: int
    length: int
    """The payload length."""
    stream_id: int
    start: int
    """Where the frame starts in the chunk that completed its header (negative: in an earlier chunk)."""
    pad: int | None = None
    """A padded DATA frame's pad length (its first payload byte); None for other frames."""

    @property
    def data_length(self) -> int:
        """DATA bytes in a DATA frame, padding and its length byte excluded (never below 0)."""
        if self.pad is None:
            return self.length
        return max(self.length - 1 - self.pad, 0)


@final
class FrameScanner:
    """Finds HTTP/2 frame boundaries in a byte stream given a chunk at a time.

    Only frame headers are read (and a padded DATA frame's pad length); the
    payloads are skipped, so the cost is per frame, not per byte.

    Args:
        skip: bytes to pass over before the first frame (the client preface).
    """

    def __init__(self, *, skip: int = 0) -> None:
        self._skip = skip
        self._pending = bytearray()
        """A frame header (plus a padded DATA frame's pad length byte) not yet complete."""
        self._pending_start = 0
        """Where the pending header started, relative to the chunk that ended before it."""

    def feed(self, data: bytes | bytearray | memoryview) -> list[FrameHead]:
        """The frames whose headers ``data`` completes, in order."""
        view = memoryview(data)
        heads: list[FrameHead] = []
        pos = 0
        end = len(view)
        if self._skip:
            taken = min(self._skip, end)
            self._skip -= taken
            pos = taken
        if self._pending:
            start = self._pending_start
            # Twice at most: the header, then a padded DATA frame's pad length.
            while pos < end and len(self._pending) < self._needed(self._pending):
                take = min(self._needed(self._pending) - len(self._pending), end - pos)
                self._pending += view[pos : pos + take]
                pos += take
            if len(self._pending) < self._needed(self._pending):
                self._pending_start -= end
                return heads
            head = self._parse(self._pending, 0, start)
            self._pending.clear()
            heads.append(head)
            pos = start + _HEAD + head.length
        while pos < end:
            if end - pos < _HEAD or end - pos < self._needed(view[pos : pos + _HEAD]):
                self._pending[:] = view[pos:end]
                self._pending_start = pos - end
                return heads
            head = self._parse(view, pos, pos)
            heads.append(head)
            pos += _HEAD + head.length
        if pos > end:
            # The payload goes on in the next chunks: skip it there.
            self._skip = pos - end
        return heads

    @staticmethod
    def _needed(head: bytes | bytearray | memoryview) -> int:
        """Bytes needed to describe the frame whose header starts ``head``."""
        if len(head) < _HEAD:
            return _HEAD
        if head[3] == _DATA and head[4] & _PADDED and (head[0] << 16 | head[1] << 8 | head[2]):
            return _HEAD + 1
        return _HEAD

    @staticmethod
    def _parse(buf: bytes | bytearray | memoryview, at: int, start: int) -> FrameHead:
        length = buf[at] << 16 | buf[at + 1] << 8 | buf[at + 2]
        frame_type = buf[at + 3]
        flags = buf[at + 4]
        stream_id = int.from_bytes(buf[at + 5 : at + 9], "big") & 0x7FFFFFFF
        pad = None
        if frame_type == _DATA and flags & _PADDED and length:
            pad = buf[at + _HEAD]
        return FrameHead(frame_type, flags, length, stream_id, start, pad)


def frame_cost(head: FrameHead) -> tuple[float, str | None]:
    """What a received frame costs, and its kind for the log (None: it costs nothing)."""
    kind = _KINDS.get(head.type)
    if kind is not None:
        if head.type == _SETTINGS:
            return FRAME_COST + (head.length // 6) // SETTINGS_PER_UNIT, kind
        return FRAME_COST, kind
    if head.type == _DATA:
        if head.data_length == 0 and not head.flags & _END_STREAM:
            return FRAME_COST, "empty DATA"
        return 0.0, None
    if head.type == _CONTINUATION:
        return (FRAME_COST, "empty CONTINUATION") if head.length == 0 else (0.0, None)
    if head.type in (_HEADERS, _GOAWAY):
        return 0.0, None
    return FRAME_COST, f"frame type {head.type:#x}"


@final
class H2Budget:
    """The token bucket of one HTTP/2 connection (see the module docstring).

    Args:
        now: the current time, in seconds (any monotonic clock).
        burst: the bucket's size.
        rate: its refill, in units per second.
    """

    def __init__(self, *, now: float, burst: float = BURST, rate: float = RATE) -> None:
        if burst <= 0 or rate < 0:
            msg = f"an HTTP/2 budget needs burst > 0 and rate >= 0, not {burst!r} and {rate!r}"
            raise ValueError(msg)
        self.burst = burst
        self.rate = rate
        self._tokens = burst
        self._when = now
        self.exhausted: str | None = None
        """What took the bucket below zero (a frame kind, for the log); None while within budget."""
        self._inbound = FrameScanner(skip=PREFACE_SIZE)
        self._outbound = FrameScanner()

    def tokens(self, now: float) -> float:
        """Units left at ``now``."""
        self._refill(now)
        return self._tokens

    def _refill(self, now: float) -> None:
        if now > self._when:
            self._tokens = min(self.burst, self._tokens + (now - self._when) * self.rate)
            self._when = now

    def spend(self, cost: float, kind: str, now: float) -> bool:
        """Charge ``cost``; False (and :attr:`exhausted` set) once the bucket is empty."""
        self._refill(now)
        self._tokens -= cost
        if self._tokens < 0 and self.exhausted is None:
            self.exhausted = kind
        return self.exhausted is None

    def earn(self, credit: float, now: float) -> None:
        """Refill ``credit`` for useful work (never above the burst, never after exhaustion)."""
        self._refill(now)
        if self.exhausted is None:
            self._tokens = min(self.burst, self._tokens + credit)

    def received(self, data: bytes | bytearray | memoryview, now: float) -> int:
        """Charge the frames in ``data`` (bytes from the client, preface first).

        Returns:
            how many bytes of ``data`` may be given to the HTTP/2 parser:
            all of them within budget, else those before the frame that
            exhausted it (0 once exhausted).
        """
        if self.exhausted is not None:
            return 0
        for head in self._inbound.feed(data):
            cost, kind = frame_cost(head)
            if kind is not None and not self.spend(cost, kind, now):
                return max(head.start, 0)
            if head.type == _DATA and head.data_length:
                self.earn(DATA_RECEIVED_CREDIT * head.data_length / 1024, now)
        return len(data)

    def sent(self, data: bytes | bytearray | memoryview, now: float, *, provoked: bool) -> None:
        """Account for frames wstrio sends (``data``: whole frames, in order).

        Args:
            data: the bytes going to the client.
            now: the current time.
            provoked: the frames answer the client's frames just received
                (not a stream's own work): its RST_STREAMs are charged.
        """
        for head in self._outbound.feed(data):
            if head.type == _HEADERS:
                self.earn(RESPONSE_CREDIT, now)
            elif head.type == _DATA and head.data_length:
                self.earn(DATA_SENT_CREDIT, now)
            elif head.type == _RST_STREAM and provoked:
                self.spend(FRAME_COST, "RST_STREAM sent", now)

    def rapid_reset(self, now: float) -> bool:
        """Charge a stream the client reset while wstrio still worked on it; False once exhausted."""
        return self.spend(FRAME_COST, "rapid reset", now)
