"""A seeded HTTP/1.1 request-head fuzzer against every kind of route (issue 12).

Each case takes a valid request (static file, proxy with a body, chunked,
an upgrade, absolute form, ``OPTIONS *``...), mutates it a few times
(:mod:`tests.fuzz.mutator`), sends it on a fresh connection, half-closes
and reads everything wstrio answers.  Every answer must be a status the
docs name for bad input or a success; none from wstrio's own code may be
5xx (the backends here are healthy, so a 5xx is a bug); the log holds no
traceback and nothing above INFO; a control client is served afterwards
and the file descriptors come back.
"""

from __future__ import annotations

import re

import pytest
import trio

from tests.fuzz.conftest import Gateway, LoudRecords, after_run, exchange, open_fds, run_cases
from tests.fuzz.mutator import Mutator, fuzz_cases, fuzz_seed

pytestmark = pytest.mark.slow

SEEDS: tuple[bytes, ...] = (
    b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n",
    b'GET /index.html?a=1&b=%20 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-2\r\nIf-None-Match: "x"\r\n\r\n',
    b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /proxy/a/b?c HTTP/1.1\r\nHost: x\r\nUser-Agent: fuzz\r\n\r\n",
    b"POST /proxy/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /proxy/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET http://x/index.html HTTP/1.1\r\nHost: y\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\nGET /proxy/2 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /ws/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET /proxy/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
)

# What wstrio may answer to a mutated request: successes and the documented
# client errors; 501 for a transfer coding it does not implement.  Never
# another 5xx: every backend here is healthy.
ALLOWED = {101, 200, 204, 206, 301, 302, 304, 400, 403, 404, 405, 408, 411, 413, 414, 416, 417, 426, 429, 431, 501}
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})[ \r]")


def statuses(answer: bytes) -> list[int]:
    """The status of every response head in ``answer``, up to a 101 (after it come frames)."""
    found: list[int] = []
    position = 0
    while position < len(answer):
        match = STATUS_LINE.match(answer, position)
        if match is None:
            # A body: skip to the next head (our bodies are small and never contain one).
            nxt = answer.find(b"HTTP/1.", position + 1)
            if nxt < 0:
                break
            position = nxt
            continue
        status = int(match.group(1))
        found.append(status)
        if status == 101:
            break
        end = answer.find(b"\r\n\r\n", position)
        if end < 0:
            break
        position = end + 4
    return found


def check_answer(data: bytes, answer: bytes) -> None:
    got = statuses(answer)
    bad = [s for s in got if s not in ALLOWED]
    assert not bad, f"status {bad} for {data[:300]!r}: {answer[:300]!r}"
    if answer and not got:
        raise AssertionError(f"an answer that is not HTTP for {data[:300]!r}: {answer[:300]!r}")


def test_statuses_reads_every_head() -> None:
    two = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 400 Bad Request\r\n\r\n"
    assert statuses(two) == [200, 400]
    assert statuses(b"HTTP/1.1 101 Switching Protocols\r\n\r\nHTTP/1.1 500 x\r\n\r\n") == [101]


async def test_mutated_request_heads(gateway: Gateway, loud: LoudRecords) -> None:
    seed = fuzz_seed()
    fds_before = open_fds()
    served = {"answered": 0}

    async def case(i: int) -> None:
        mutator = Mutator(seed * 1_000_003 + i)
        data = mutator.mutate(mutator.choice(SEEDS))
        answer = await exchange(gateway.port, data)
        check_answer(data, answer)
        if answer:
            served["answered"] += 1

    await run_cases(fuzz_cases(3000), case)
    await after_run(gateway, loud, fds_before)
    # The fuzzer is not so wild that nothing gets through: most cases get an answer.
    assert served["answered"] > fuzz_cases(3000) // 2
    await trio.lowlevel.checkpoint()
