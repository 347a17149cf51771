"""A seeded mutator for the fuzzers: the same seed gives the same cases, everywhere.

Sans-I/O: it only makes bytes.  Each fuzzer starts from valid inputs (a
request head, a handshake, an HTTP/2 frame sequence) and applies a few
mutations chosen by :class:`Mutator`, which draws everything from one
``random.Random(seed)``, so a failing case is reproduced by its seed and
index alone (``WSTRIO_FUZZ_SEED``, see ``docs/testing.md``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence

__all__ = ["INTERESTING_BYTES", "INTERESTING_TOKENS", "Mutator", "fuzz_cases", "fuzz_seed"]

DEFAULT_CASES = 1500
DEFAULT_SEED = 20261203

INTERESTING_BYTES = b"\r\n\x00\t :;,%/.?#@\\\x7f\x80\xff\x0b\x0c\"'=-"
INTERESTING_TOKENS: tuple[bytes, ...] = (
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n ",
    b"\r\n\t",
    b"\r\n\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: -1\r\n",
    b"Content-Length: 99999999999999999999999\r\n",
    b"Content-Length: 1, 2\r\n",
    b"Content-Length : 3\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Transfer-Encoding: chunked, identity\r\n",
    b"Transfer-Encoding:\x0bchunked\r\n",
    b"Transfer-Encoding: xchunked\r\n",
    b"Host: x\r\n",
    b"Host: a b/c@d\r\n",
    b"Host: [::1]:99999\r\n",
    b"Upgrade: websocket\r\n",
    b"Connection: Upgrade\r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive, Upgrade, close\r\n",
    b"Sec-WebSocket-Version: 13\r\n",
    b"Sec-WebSocket-Version: 8\r\n",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    b"Sec-WebSocket-Key: short\r\n",
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    b"Sec-WebSocket-Protocol: chat, , superchat\r\n",
    b"Origin: null\r\n",
    b"Expect: 100-continue\r\n",
    b"Range: bytes=0-0,-1,5-\r\n",
    b"If-None-Match: *\r\n",
    b"HTTP/1.0",
    b"HTTP/1.2",
    b"HTTP/2.0",
    b"HTTP/0.9",
    b"http/1.1",
    b"GET",
    b"POST",
    b"HEAD",
    b"OPTIONS",
    b"CONNECT",
    b"PRI",
    b"*",
    b"http://x/",
    b"http://[::1]:1/",
    b"%2e%2e",
    b"%2f",
    b"%00",
    b"%",
    b"/../",
    b"/./",
    b"//",
    b"/.git/config",
    b"?",
    b"#",
    b"0\r\n\r\n",
    b"5\r\nhello\r\n",
    b"zz\r\n",
    b"ffffffffffffffffff\r\n",
    b"0;ext=1\r\n\r\n",
)


def fuzz_cases(default: int = DEFAULT_CASES) -> int:
    """Cases per fuzzer: ``WSTRIO_FUZZ_CASES`` (for long runs), else ``default``."""
    return int(os.environ.get("WSTRIO_FUZZ_CASES", default))


def fuzz_seed() -> int:
    """The base seed: ``WSTRIO_FUZZ_SEED``, else a fixed one (CI runs are reproducible)."""
    return int(os.environ.get("WSTRIO_FUZZ_SEED", DEFAULT_SEED))


class Mutator:
    """Byte- and token-level mutations, all drawn from one seeded generator."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)

    def choice(self, items: Sequence[bytes]) -> bytes:
        return items[self.random.randrange(len(items))]

    def _span(self, data: bytes) -> tuple[int, int]:
        if not data:
            return 0, 0
        start = self.random.randrange(len(data))
        end = min(len(data), start + 1 + int(self.random.expovariate(0.1)))
        return start, end

    # Each mutation takes bytes and gives bytes.
    def flip(self, data: bytes) -> bytes:
        if not data:
            return data
        i = self.random.randrange(len(data))
        return data[:i] + bytes((data[i] ^ (1 << self.random.randrange(8)),)) + data[i + 1 :]

    def replace_byte(self, data: bytes) -> bytes:
        if not data:
            return data
        i = self.random.randrange(len(data))
        return data[:i] + bytes((self.choice([bytes((b,)) for b in INTERESTING_BYTES])[0],)) + data[i + 1 :]

    def insert_byte(self, data: bytes) -> bytes:
        i = self.random.randrange(len(data) + 1)
        byte = self.random.choice([self.random.randrange(256), *INTERESTING_BYTES])
        return data[:i] + bytes((byte,)) + data[i:]

    def insert_token(self, data: bytes) -> bytes:
        i = self.random.randrange(len(data) + 1)
        return data[:i] + self.choice(INTERESTING_TOKENS) + data[i:]

    def insert_line(self, data: bytes) -> bytes:
        """A token at the start of a header line (where it is most likely to be read as one)."""
        starts = [i + 2 for i in range(len(data) - 1) if data[i : i + 2] == b"\r\n"]
        if not starts:
            return self.insert_token(data)
        i = starts[self.random.randrange(len(starts))]
        token = self.choice([t for t in INTERESTING_TOKENS if t.endswith(b"\r\n")])
        return data[:i] + token + data[i:]

    def delete(self, data: bytes) -> bytes:
        start, end = self._span(data)
        return data[:start] + data[end:]

    def duplicate(self, data: bytes) -> bytes:
        start, end = self._span(data)
        return data[:end] + data[start:end] * self.random.choice((1, 2, 50)) + data[end:]

    def truncate(self, data: bytes) -> bytes:
        return data[: self.random.randrange(len(data) + 1)]

    def swap_lines(self, data: bytes) -> bytes:
        lines = data.split(b"\r\n")
        if len(lines) > 2:
            i, j = self.random.randrange(len(lines)), self.random.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        return b"\r\n".join(lines)

    def repeat_line(self, data: bytes) -> bytes:
        lines = data.split(b"\r\n")
        if len(lines) > 1:
            i = self.random.randrange(1, len(lines))
            lines[i:i] = [lines[i]] * self.random.choice((1, 3, 200))
        return b"\r\n".join(lines)

    def huge(self, data: bytes) -> bytes:
        i = self.random.randrange(len(data) + 1)
        return (
            data[:i]
            + self.choice([b"a", b"%2e", b"/", b"X-A: b\r\n"]) * self.random.choice((100, 5000, 70000))
            + data[i:]
        )

    def mutations(self) -> tuple[Callable[[bytes], bytes], ...]:
        return (
            self.flip,
            self.replace_byte,
            self.insert_byte,
            self.insert_token,
            self.insert_line,
            self.insert_line,
            self.insert_line,
            self.delete,
            self.duplicate,
            self.truncate,
            self.swap_lines,
            self.repeat_line,
            self.huge,
        )

    def mutate(self, data: bytes, rounds: int | None = None) -> bytes:
        """``data`` after 1-3 mutations (or ``rounds``)."""
        n = rounds if rounds is not None else self.random.choice((1, 1, 1, 2, 3))
        ops = self.mutations()
        for _ in range(n):
            op = ops[self.random.randrange(len(ops))]
            if op is self.huge and self.random.random() < 0.8:
                op = self.insert_token  # huge inputs are slow: fewer of them
            data = op(data)
        return data
