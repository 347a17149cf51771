"""What the fuzzers share: a gateway with every kind of route, and the checks after a run.

The gateway serves static files, a ``/ws/`` tunnel to an echo backend and a
``/proxy/`` route (upgrades passed through) to an HTTP backend, so a mutated
input can reach every handler.  After the cases a run asserts what issue 12
asks of the front door: no traceback and nothing above INFO in wstrio's
log, a control client still served, and the file descriptors back to their
baseline.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import attrs
import pytest
import trio

import wstrio
from tests.helpers import RawClient, echo_route, serve_echo_tcp, serve_recording_backend, start_server

CONCURRENCY = 8
CASE_DEADLINE = 20.0
"""Real seconds a case may take before it counts as a hang (most take a millisecond)."""


class LoudRecords(logging.Handler):
    """Keeps every wstrio record above INFO or with a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno > logging.INFO or record.exc_info:
            self.records.append(record)

    def lines(self) -> list[str]:
        return [f"{r.levelname} {r.name}: {r.getMessage()}" for r in self.records]


@pytest.fixture
def loud() -> Iterator[LoudRecords]:
    handler = LoudRecords()
    logger = logging.getLogger("wstrio")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@attrs.define
class Gateway:
    server: wstrio.Server
    backend_requests: list[bytes]

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture
async def gateway(nursery: trio.Nursery, tmp_path: Path) -> Gateway:
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("index\n")
    (www / ".env").write_text("SECRET=1\n")
    targets: list[bytes] = []
    backend = await serve_recording_backend(nursery, lambda request: targets.append(request.target))
    echo = await serve_echo_tcp(nursery)
    server = await start_server(
        nursery,
        {
            "server": {"listen": ["127.0.0.1:0"], "document-root": str(www)},
            "route": [
                echo_route(echo, "/ws/"),
                {
                    "path": "/proxy/",
                    "handler": "proxy",
                    "upgrade": True,
                    "backend": [{"host": "127.0.0.1", "port": backend}],
                },
            ],
        },
    )
    return Gateway(server, targets)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def control_request(port: int) -> None:
    """A well-formed request still gets its page."""
    client = await RawClient.tcp(port)
    try:
        await client.send(b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = await client.read_response()
        assert response.status == 200, response
        assert response.body == b"index\n"
    finally:
        await client.aclose()


async def exchange(port: int, data: bytes, limit: int = 1 << 20) -> bytes:
    """Send ``data``, half-close, and read what comes back until EOF (at most ``limit`` bytes)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = bytearray()
    try:
        try:
            await stream.send_all(data)
            await stream.send_eof()
        except trio.BrokenResourceError:
            pass  # wstrio answered and closed before it read everything: what it sent is still there
        while len(received) < limit:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break  # a reset after the answer (the client wrote past an error)
            if not chunk:
                break
            received += chunk
    finally:
        await stream.aclose()
    return bytes(received)


async def run_cases(count: int, case: Callable[[int], Awaitable[None]], *, concurrency: int = CONCURRENCY) -> None:
    """Run ``case(i)`` for i in range(count), ``concurrency`` at a time; a hang fails naming its index."""
    indexes = iter(range(count))

    async def worker() -> None:
        for i in indexes:
            with trio.fail_after(CASE_DEADLINE):
                try:
                    await case(i)
                except trio.TooSlowError:
                    raise
                except AssertionError as e:
                    raise AssertionError(f"case {i}: {e}") from e

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)


async def after_run(gateway: Gateway, loud: LoudRecords, fds_before: int) -> None:
    """The checks every fuzzer makes once its cases are done."""
    await control_request(gateway.port)
    # Connections the server is still closing (a lingering close) need a moment.
    with trio.move_on_after(10):
        while open_fds() > fds_before:  # noqa: ASYNC110 (no event says "the kernel closed them")
            await trio.sleep(0.05)
    assert open_fds() <= fds_before, f"{open_fds() - fds_before} file descriptors were not given back"
    assert not loud.records, loud.lines()[:20]
