"""A seeded WebSocket handshake fuzzer, with mutated frames after the ones that succeed (issue 12).

Each case builds an opening handshake header by header (a tunnel route and
a pass-through proxy route), mutates it at the header level (a header
dropped, repeated, its name's case changed, its value swapped for an odd
one) and sometimes at the byte level too, and sends it on a fresh
connection.  A handshake wstrio accepts (101) is followed by a few client
frames, some of them mutated.  Every answer must be a documented status;
a tunnel that opened must end with a CLOSE whose code is one the docs list
for what the client did (1000, 1001, 1002, 1007, 1009); the log stays
quiet; a control client is served and the file descriptors come back.
"""

from __future__ import annotations

import struct

import pytest

from tests.fuzz.conftest import Gateway, LoudRecords, after_run, exchange, open_fds, run_cases
from tests.fuzz.mutator import Mutator, fuzz_cases, fuzz_seed
from tests.fuzz.test_h1_heads import check_answer, statuses
from tests.helpers import client_frame

pytestmark = pytest.mark.slow

BASE: tuple[tuple[bytes, bytes], ...] = (
    (b"Host", b"x"),
    (b"Upgrade", b"websocket"),
    (b"Connection", b"Upgrade"),
    (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"Sec-WebSocket-Version", b"13"),
)
EXTRA: tuple[tuple[bytes, bytes], ...] = (
    (b"Origin", b"http://x"),
    (b"Sec-WebSocket-Protocol", b"chat"),
    (b"Sec-WebSocket-Extensions", b"permessage-deflate; client_max_window_bits"),
    (b"User-Agent", b"fuzz"),
    (b"Cookie", b"a=b"),
)
ODD_VALUES: tuple[bytes, ...] = (
    b"",
    b" ",
    b"websocket, h2c",
    b"WebSocket",
    b"keep-alive, Upgrade",
    b"upgrade, close",
    b"13, 8",
    b"8",
    b"14",
    b"-13",
    b"x" * 9000,
    b"dGhlIHNhbXBsZSBub25jZQ",
    b"AAAAAAAAAAAAAAAAAAAAAA==",
    b"!!!!!!!!!!!!!!!!!!!!!!==",
    b"a\x00b",
    b"a\x7fb",
    b"\xff\xfe",
    b"chat, , superchat",
    b"permessage-deflate; server_max_window_bits=7",
    b"permessage-deflate; client_max_window_bits=99",
    b"null",
    b"http://evil",
)
TARGETS = (b"/ws/", b"/ws/deeper?q=1", b"/proxy/ws", b"/ws", b"/nowhere", b"http://x/ws/", b"/ws/%2e%2e/proxy/")
METHODS = (b"GET", b"GET", b"GET", b"POST", b"HEAD", b"CONNECT")
CLOSE_CODES = {1000, 1001, 1002, 1007, 1009}


def build(m: Mutator) -> bytes:
    headers = list(BASE) + [h for h in EXTRA if m.random.random() < 0.3]
    for _ in range(m.random.choice((0, 1, 1, 2, 3))):
        op = m.random.randrange(5)
        i = m.random.randrange(len(headers)) if headers else 0
        if not headers:
            break
        if op == 0:
            del headers[i]
        elif op == 1:
            headers.insert(m.random.randrange(len(headers) + 1), headers[i])
        elif op == 2:
            headers[i] = (headers[i][0], m.choice(ODD_VALUES))
        elif op == 3:
            headers[i] = (headers[i][0].swapcase(), headers[i][1])
        else:
            headers[i] = (headers[i][0], m.mutate(headers[i][1], 1))
    target = m.choice(TARGETS) if m.random.random() < 0.5 else b"/ws/"
    method = m.choice(METHODS) if m.random.random() < 0.2 else b"GET"
    version = b"HTTP/1.0" if m.random.random() < 0.05 else b"HTTP/1.1"
    head = b"%s %s %s\r\n" % (method, target, version)
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n"
    if m.random.random() < 0.25:
        head = m.mutate(head, 1)
    return head


def frames(m: Mutator) -> bytes:
    """A text frame, a ping, maybe a mutated frame, maybe a CLOSE."""
    out = [client_frame(0x1, b"hello"), client_frame(0x9, b"p")]
    choices = (
        client_frame(0x2, b"\x00" * m.random.choice((0, 1, 200, 70000))),
        client_frame(0x1, b"\xff\xfe"),
        client_frame(0x1, b"a", fin=False) + client_frame(0x0, b"b"),
        client_frame(0x0, b"stray"),
        client_frame(0x9, b"x" * 126),
        client_frame(0x3, b"reserved"),
        client_frame(0x8, struct.pack("!H", 1005)),
        client_frame(0x8, b"\x03"),
        client_frame(0x8, struct.pack("!H", 1000) + b"\xff"),
        bytes((0x81, 0x05)) + b"hello",  # unmasked
        bytes((0x81, 0xFF)) + struct.pack("!Q", 1 << 63) + b"\x00" * 4,
    )
    for _ in range(m.random.choice((0, 1, 2))):
        piece = m.choice(choices)
        out.append(m.mutate(piece, 1) if m.random.random() < 0.5 else piece)
    if m.random.random() < 0.5:
        out.append(client_frame(0x8, struct.pack("!H", 1000)))
    return b"".join(out)


def close_code(stream: bytes) -> int | None:
    """The code of the first CLOSE among the server's (unmasked) frames, or None if there is none."""
    i = 0
    while i + 2 <= len(stream):
        opcode, length = stream[i] & 0x0F, stream[i + 1] & 0x7F
        i += 2
        if length == 126:
            length, i = struct.unpack("!H", stream[i : i + 2])[0], i + 2
        elif length == 127:
            length, i = struct.unpack("!Q", stream[i : i + 8])[0], i + 8
        payload = stream[i : i + length]
        i += length
        if opcode == 0x8:
            return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
    return None


async def test_mutated_handshakes(gateway: Gateway, loud: LoudRecords) -> None:
    seed = fuzz_seed()
    fds_before = open_fds()
    opened = {"n": 0}

    async def case(i: int) -> None:
        m = Mutator(seed * 1_000_033 + i)
        head = build(m)
        after = frames(m)
        answer = await exchange(gateway.port, head + after)
        check_answer(head, answer)
        got = statuses(answer)
        if got and got[-1] == 101 and answer.find(b"\r\n\r\n") > 0 and b"/proxy/" not in head.split(b"\r\n")[0]:
            opened["n"] += 1
            rest = answer[answer.find(b"\r\n\r\n") + 4 :]
            code = close_code(rest)
            assert code in CLOSE_CODES, f"close {code} after {head!r} + {after[:200]!r}: {rest[:200]!r}"

    await run_cases(fuzz_cases(2000), case)
    await after_run(gateway, loud, fds_before)
    assert opened["n"] > fuzz_cases(2000) // 10, "too few handshakes succeeded to test the frames after them"
