"""Memory-tier tests for the raw byte relay (wstrio._io.streams.relay.relay).

Every test that takes ``transport`` runs three times: on in-memory Trio
streams, on plain sockets with the hub off, and on sockets in the hub
(tests/streams_support.py), so the same assertions prove the pumps and the
hub path; the ones that need lockstep streams (no buffer at all) or close a
stream under the relay run on memory streams.  Timers run on the ``autojump_clock``:
``await trio.sleep(n)`` in a test only lets everything else settle.  (Tests take
the ``autojump_clock`` fixture as an argument: pytest-trio finds the clock
among the test's arguments, not among ``usefixtures``.)
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import trio
import trio.testing

from tests.streams_support import Transport
from wstrio._io.streams.pipes import READ_SIZE
from wstrio._io.streams.relay import RelayOutcome, relay

RelayFn = Callable[[], Awaitable[RelayOutcome]]


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some():
        data += chunk
    return bytes(data)


def pair(lockstep: bool = False) -> tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]:
    """(our end, the relay's end) of an in-memory connection."""
    if lockstep:
        return trio.testing.lockstep_stream_pair()
    return trio.testing.memory_stream_pair()


async def test_leftovers_go_first_and_half_close_propagates(
    autojump_clock: trio.testing.MockClock, transport: Transport
) -> None:
    client, relay_client = transport.pair()
    backend, relay_backend = transport.pair()
    result: list[RelayOutcome] = []

    async def run() -> None:
        result.append(
            await relay(
                relay_client,
                b"client-early|",
                relay_backend,
                b"backend-early|",
                max_read_idle=60,
                max_write_idle=60,
                hub=transport.hub,
            )
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await client.send_all(b"hello")
        await client.send_eof()
        # The backend sees the client's leftover, its data, then EOF ...
        assert await read_all(backend) == b"client-early|hello"
        # ... and can still answer: that direction runs on.
        await backend.send_all(b"answer")
        await backend.send_eof()
        assert await read_all(client) == b"backend-early|answer"
    (outcome,) = result
    assert outcome == RelayOutcome(
        bytes_to_backend=len(b"client-early|hello"),
        bytes_to_client=len(b"backend-early|answer"),
        first_eof="client",
        error=None,
    )
    assert "closed by client" in outcome.describe()


async def test_backend_eof_first_lets_the_client_finish(
    autojump_clock: trio.testing.MockClock, transport: Transport
) -> None:
    client, relay_client = transport.pair()
    backend, relay_backend = transport.pair()
    result: list[RelayOutcome] = []

    async def run() -> None:
        result.append(
            await relay(relay_client, b"", relay_backend, b"", max_read_idle=0, max_write_idle=0, hub=transport.hub)
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await backend.send_all(b"bye")
        await backend.send_eof()
        assert await read_all(client) == b"bye"
        await client.send_all(b"late words")
        await client.send_eof()
        assert await read_all(backend) == b"late words"
    assert result[0].first_eof == "backend"
    assert result[0].error is None


async def test_an_error_on_one_side_ends_both(autojump_clock: trio.testing.MockClock) -> None:
    client, relay_client = pair()
    backend, relay_backend = pair()
    result: list[RelayOutcome] = []

    async def run() -> None:
        result.append(await relay(relay_client, b"", relay_backend, b"", max_read_idle=0, max_write_idle=0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await client.send_all(b"x")
        assert await backend.receive_some() == b"x"
        # The relay's backend stream breaks under it.
        await relay_backend.aclose()
        await trio.sleep(1)
    assert result[0].error is not None
    assert "backend" in result[0].error


async def test_idle_counts_both_directions(autojump_clock: trio.testing.MockClock, transport: Transport) -> None:
    client, relay_client = transport.pair()
    backend, relay_backend = transport.pair()
    result: list[RelayOutcome] = []

    async def run() -> None:
        result.append(
            await relay(relay_client, b"", relay_backend, b"", max_read_idle=60, max_write_idle=0, hub=transport.hub)
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        # The client stays silent for 5 minutes while the backend talks
        # every 30 s: not idle.
        for _ in range(10):
            await backend.send_all(b"tick")
            assert await client.receive_some() == b"tick"
            await trio.sleep(30)
        assert not result
        # Then nobody says anything.
        await trio.sleep(61)
    assert result[0].error == "no data in either direction for 60 s"


async def test_a_stalled_write_ends_the_relay(autojump_clock: trio.testing.MockClock) -> None:
    _client, relay_client = pair(lockstep=True)  # a write waits for the reader
    backend, relay_backend = pair()
    result: list[RelayOutcome] = []

    async def run() -> None:
        result.append(await relay(relay_client, b"", relay_backend, b"", max_read_idle=0, max_write_idle=10))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await backend.send_all(b"nobody reads this")
        await trio.sleep(11)
    assert result[0].error == "writing to the client made no progress for 10 s"


async def test_backpressure_one_chunk_in_flight(autojump_clock: trio.testing.MockClock) -> None:
    client, relay_client = pair(lockstep=True)
    backend, relay_backend = pair(lockstep=True)
    sent = 0

    async def produce() -> None:
        nonlocal sent
        for _ in range(4):
            await backend.send_all(b"x" * READ_SIZE)
            sent += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            functools.partial(relay, relay_client, b"", relay_backend, b"", max_read_idle=0, max_write_idle=0)
        )
        nursery.start_soon(produce)
        await trio.testing.wait_all_tasks_blocked()
        # The relay read one chunk and waits to hand it to the client, who
        # reads nothing: the backend's next write cannot complete.
        assert sent == 1
        received = 0
        while received < 4 * READ_SIZE:
            received += len(await client.receive_some())
        await trio.testing.wait_all_tasks_blocked()
        assert sent == 4
        nursery.cancel_scope.cancel()


class NotHalfCloseable(trio.abc.Stream):
    """A stream without send_eof (like TLS)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_eof_to_a_stream_without_half_close_ends_the_relay(
    autojump_clock: trio.testing.MockClock, transport: Transport
) -> None:
    client, relay_client = transport.pair()
    backend, relay_backend = transport.pair()
    result: list[RelayOutcome] = []

    async def run() -> None:
        result.append(
            await relay(
                NotHalfCloseable(relay_client),
                b"",
                relay_backend,
                b"",
                max_read_idle=0,
                max_write_idle=0,
                hub=transport.hub,
            )
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await backend.send_all(b"last")
        await backend.send_eof()
        assert await client.receive_some() == b"last"
    assert result[0].first_eof == "backend"
    assert result[0].error is None


async def test_cancellation_propagates_and_leaves_streams_open(
    autojump_clock: trio.testing.MockClock, transport: Transport
) -> None:
    client, relay_client = transport.pair()
    _backend, relay_backend = transport.pair()
    with trio.move_on_after(5) as scope:
        await relay(relay_client, b"", relay_backend, b"", max_read_idle=0, max_write_idle=0, hub=transport.hub)
    assert scope.cancelled_caught
    # The caller owns the streams: still usable.
    await relay_client.send_all(b"still open")
    assert await client.receive_some() == b"still open"
