"""Memory-tier tests for the wstunnel tunnel (wstrio._io.streams.tunnel.run_tunnel).

The client end is driven by a real wsproto client ``Connection`` (it masks,
parses and validates independently of wstrio's codec), the backend end is
plain bytes.  Every test that takes ``transport`` runs three times: on
in-memory Trio streams, on plain sockets with the hub off, and on sockets
in the hub (tests/streams_support.py), so the same assertions prove the
task path and the hub path.  The few that need streams only memory can
build (lockstep, metered) run on memory streams.  Every timer runs on the
``autojump_clock``, so nothing sleeps for real and no assertion depends on
timing; ``await trio.sleep(1)`` in a test only means "let everything else
settle" (the clock jumps once every task is blocked).
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing
from wsproto import events as ws
from wsproto.connection import Connection, ConnectionType

from tests.streams_support import Transport
from wstrio._io.streams.fastpath.hub import Hub
from wstrio._io.streams.tunnel import READ_SIZE, Outcome, TunnelSettings, run_tunnel
from wstrio._sansio.websocket.codec import WebSocketCodec, encode_frame

Message = bytes | str
DEADLINE = 24 * 3600  # virtual seconds


class WsClient:
    """The WebSocket client end of a tunnel: a wsproto client over a Trio stream."""

    def __init__(self, stream: trio.abc.HalfCloseableStream) -> None:
        self.stream = stream
        self.conn = Connection(ConnectionType.CLIENT)
        self._pending: deque[ws.Event] = deque()

    async def send(self, *events: ws.Event) -> None:
        """Send ``events`` in ONE write."""
        await self.stream.send_all(b"".join(self.conn.send(e) for e in events))

    async def next_event(self) -> ws.Event:
        while not self._pending:
            data = await self.stream.receive_some()
            assert data, "the tunnel closed the client stream without a CLOSE frame"
            self.conn.receive_data(bytes(data))
            self._pending.extend(self.conn.events())
        return self._pending.popleft()

    async def next_message(self) -> Message:
        """The next whole data message (wsproto may hand it over in pieces)."""
        parts: list[Message] = []
        while True:
            event = await self.next_event()
            assert isinstance(event, ws.Message), event
            parts.append(event.data)
            if event.message_finished:
                return "".join(parts) if isinstance(parts[0], str) else b"".join(parts)  # type: ignore[arg-type]

    async def until_close(self, *, reply: bool = True) -> tuple[list[Message], ws.CloseConnection]:
        """Every message up to the server's CLOSE, and that CLOSE (answered if ``reply``)."""
        messages: list[Message] = []
        current: list[Message] = []
        while True:
            event = await self.next_event()
            if isinstance(event, ws.CloseConnection):
                assert not current, "CLOSE inside an unfinished message"
                if reply:
                    await self.send(event.response())
                return messages, event
            assert isinstance(event, ws.Message), event
            current.append(event.data)
            if event.message_finished:
                messages.append("".join(current) if isinstance(current[0], str) else b"".join(current))  # type: ignore[arg-type]
                current = []


async def _read_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    chunks = []
    while data := await stream.receive_some():
        chunks.append(data)
    return b"".join(chunks)


async def _read_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = await stream.receive_some(n - len(buf))
        assert data, f"EOF after {len(buf)} of {n} bytes"
        buf += data
    return bytes(buf)


class Rig:
    """One tunnel between in-memory client and backend streams."""

    def __init__(
        self,
        transport: Transport | None = None,
        *,
        binary: bool = False,
        settings: TunnelSettings | None = None,
        client_side: tuple[trio.abc.HalfCloseableStream, trio.abc.Stream] | None = None,
        backend_side: tuple[trio.abc.HalfCloseableStream, trio.abc.Stream] | None = None,
        hub: Hub | None = None,
    ) -> None:
        """Streams from ``transport`` (memory streams without one), unless given."""
        pair = transport.pair if transport is not None else trio.testing.memory_stream_pair
        client_end, self.server_end = client_side or pair()
        self.backend: trio.abc.HalfCloseableStream
        self.backend, self.backend_end = backend_side or pair()
        self.hub = hub if hub is not None else transport.hub if transport is not None else None
        self.client = WsClient(client_end)
        self.codec = WebSocketCodec(binary=binary)
        self.settings = settings or TunnelSettings()
        self.outcome: Outcome | None = None
        self.done = trio.Event()

    async def run(self) -> None:
        try:
            self.outcome = await run_tunnel(self.server_end, self.backend_end, self.codec, self.settings, hub=self.hub)
        finally:
            self.done.set()

    def stop_backend_reads(self) -> None:
        """The backend stops reading for good: the tunnel's writes to it fail."""
        if isinstance(self.backend, trio.SocketStream):
            self.backend.socket.shutdown(socket.SHUT_RD)
        else:
            self.backend.receive_stream.close()  # type: ignore[attr-defined]


@asynccontextmanager
async def running(rig: Rig) -> AsyncIterator[trio.Nursery]:
    """Run ``rig``'s tunnel in the background; on exit, wait for it to end.

    A (virtual) deadline turns a tunnel that never ends into a failure, not a hang.
    """
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rig.run)
            yield nursery


# -- data both ways ----------------------------------------------------------------------


async def test_text_tunnel_both_ways(autojump_clock: trio.testing.MockClock, transport: Transport) -> None:
    rig = Rig(transport)
    async with running(rig):
        await rig.client.send(ws.TextMessage("h\u00e9llo"))
        assert await _read_exactly(rig.backend, 6) == "h\u00e9llo".encode()
        await rig.backend.send_all(b"world")
        assert await rig.client.next_message() == "world"
        await rig.client.send(ws.BytesMessage(b"\x00\x01binary in"))
        assert await _read_exactly(rig.backend, 11) == b"\x00\x01binary in"
        await rig.backend.send_eof()
        messages, close = await rig.client.until_close()
    assert messages == []
    assert close.code == 1001
    assert rig.outcome == Outcome(1001, "", "backend")
    assert transport.entered == (1 if transport.mode == "hub" else 0)  # the path under test was taken


async def test_binary_tunnel_both_ways(autojump_clock: trio.testing.MockClock, transport: Transport) -> None:
    rig = Rig(transport, binary=True)
    async with running(rig):
        await rig.client.send(ws.BytesMessage(b"\xff\x00\xfe"))
        assert await _read_exactly(rig.backend, 3) == b"\xff\x00\xfe"
        await rig.backend.send_all(b"\xc3(\xff")  # not UTF-8: fine in binary frames
        assert await rig.client.next_message() == b"\xc3(\xff"
        await rig.backend.send_eof()
        _, close = await rig.client.until_close()
    assert close.code == 1001
    assert rig.outcome is not None
    assert rig.outcome.by == "backend"


async def test_fragmented_client_message_reaches_backend(
    autojump_clock: trio.testing.MockClock, transport: Transport
) -> None:
    rig = Rig(transport)
    async with running(rig):
        await rig.client.send(ws.TextMessage("one ", message_finished=False), ws.Ping(b"between"))
        await rig.client.send(ws.TextMessage("two", message_finished=True))
        assert await _read_exactly(rig.backend, 7) == b"one two"
        event = await rig.client.next_event()
        assert event == ws.Pong(b"between")
        await rig.backend.send_eof()
        await rig.client.until_close()


async def test_large_messages_both_ways(autojump_clock: trio.testing.MockClock, transport: Transport) -> None:
    up = bytes(i % 251 for i in range(3 << 20))
    down = bytes(i % 253 for i in range(3 << 20))
    rig = Rig(transport, binary=True)
    async with running(rig) as nursery:
        nursery.start_soon(rig.client.send, ws.BytesMessage(up))
        assert await _read_exactly(rig.backend, len(up)) == up

        async def send_down() -> None:  # while the client reads (socket buffers are finite)
            await rig.backend.send_all(down)
            await rig.backend.send_eof()

        nursery.start_soon(send_down)
        messages, close = await rig.client.until_close()
    # one frame per backend read: the chunks add up to the whole payload, in order
    assert b"".join(messages) == down  # type: ignore[arg-type]
    assert close.code == 1001
    assert transport.entered == (1 if transport.mode == "hub" else 0)  # the path under test was taken


async def test_client_ping_is_answered(autojump_clock: trio.testing.MockClock, transport: Transport) -> None:
    rig = Rig(transport)
    async with running(rig):
        await rig.client.send(ws.Ping(b"are you there"))
        assert await rig.client.next_event() == ws.Pong(b"are you there")
        await rig.backend.send_eof()
        await rig.client.until_close()


# -- endings and close codes ------------------------------------------------------------------


async def test_backend_eof_sends_queued_data_then_1001(
    autojump_clock: trio.testing.MockClock, transport: Transport
) -> None:
    rig = Rig(transport)
    await rig.backend.send_all(b"last words")
    await rig.backend.send_eof()
    async with running(rig):
        messages, close = await rig.client.until_close()
    assert messages == ["last words"]
    assert close.code == 1001
    assert rig.outcome == Outcome(1001, "", "backend")


async def test_client_close_replies_1000_after_delivering_data(
    autojump_clock: trio.testing.MockClock, transport: Transport
) -> None:
    rig = Rig(transport)
    async with running(rig):
        # Data and CLOSE in the SAME write: lighttpd loses the data, wstrio must not.
        await rig.client.send(ws.BytesMessage(b"abc"), ws.TextMessage("def"), ws.CloseConnection(4000, "done"))
        assert await _read_until_eof(rig.backend) == b"abcdef"
        close = await rig.client.next_event()
    assert close == ws.CloseConnection(1000, "")
    assert rig.outcome is not None
    assert (rig.outcome.code, rig.outcome.by) == (1000, "client")
    assert transport.entered == (1 if transport.mode == "hub" else 0)  # the path under test was taken


async def test_client_close_behind_a_blocked_backend_write_ends_once(
    autojump_clock: trio.testing.MockClock, transport: Transport
) -> None:
    """Data, then CLOSE, in one write, while the backend does not read: in the
    hub that is a hand-back with bytes pending *and* the CLOSE; the ending is
    finished in one place, after the data, whichever path saw it."""
    big = bytes(i % 241 for i in range(1 << 20))
    rig = Rig(transport, binary=True)
    async with running(rig) as nursery:
        nursery.start_soon(rig.client.send, ws.BytesMessage(big), ws.CloseConnection(1000))
        await trio.sleep(1)  # the backend reads nothing yet: writes to it block
        assert await _read_until_eof(rig.backend) == big  # all the data, then EOF
        close = await rig.client.next_event()
    assert close == ws.CloseConnection(1000, "")
    assert rig.outcome == Outcome(1000, "", "client")


async def test_client_close_in_pipelined_leftover(autojump_clock: trio.testing.MockClock, transport: Transport) -> None:
    rig = Rig(transport)
    early = Connection(ConnectionType.CLIENT)
    leftover = early.send(ws.BytesMessage(b"early")) + early.send(ws.CloseConnection(1000))
    rig.codec = WebSocketCodec(binary=False, leftover=leftover)
    async with running(rig):
        assert await _read_until_eof(rig.backend) == b"early"
        assert await rig.client.next_event() == ws.CloseConnection(1000, "")
    assert rig.outcome is not None
    assert rig.outcome.by == "client"


async def test_protocol_error_is_1002(autojump_clock: trio.testing.MockClock, transport: Transport) -> None:
    rig = Rig(transport)
    async with running(rig):
        await rig.client.stream.send_all(encode_frame(0x1, b"unmasked"))
        _, close = await rig.client.until_close()
    assert close.code == 1002
    assert rig.outcome is not None
    assert (rig.outcome.code, rig.outcome.by) == (1002, "protocol")
    assert transport.entered == (1 if transport.mode == "hub" else 0)  # the path under test was taken


async def test_invalid_utf8_from_client_is_1007(autojump_clock: trio.testing.MockClock, transport: Transport) -> None:
    rig = Rig(transport)
    raw = bytes((0x81, 0x80 | 2)) + b"\0\0\0\0" + b"\xc3\x28"  # masked (zero key) text frame, bad UTF-8
    async with running(rig):
        await rig.client.stream.send_all(raw)
        _, close = await rig.client.until_close()
    assert close.code == 1007
    assert rig.outcome is not None
    assert rig.outcome.by == "protocol"


async def test_control_frame_over_125_bytes_is_1002(
    autojump_clock: trio.testing.MockClock, transport: Transport
) -> None:
    rig = Rig(transport)
    raw = bytes((0x89, 0x80 | 126)) + (200).to_bytes(2, "big") + b"\0\0\0\0" + b"p" * 200
    async with running(rig):
        await rig.client.stream.send_all(raw)
        _, close = await rig.client.until_close()
    assert close.code == 1002


async def test_idle_client_gets_1001(autojump_clock: trio.testing.MockClock, transport: Transport) -> None:
    rig = Rig(transport, settings=TunnelSettings(max_read_idle=10))
    async with running(rig):
        _, close = await rig.client.until_close()
    assert close.code == 1001
    assert rig.outcome is not None
    assert (rig.outcome.code, rig.outcome.by) == (1001, "idle")


async def test_client_traffic_keeps_idle_timer_from_firing(
    autojump_clock: trio.testing.MockClock, transport: Transport
) -> None:
    rig = Rig(transport, settings=TunnelSettings(max_read_idle=10))
    async with running(rig):
        for i in range(6):  # 6 x 8 s = 48 s > 10 s of idle allowance
            await trio.sleep(8)
            assert not rig.done.is_set()
            await rig.client.send(ws.TextMessage(str(i)))
            assert await _read_exactly(rig.backend, 1) == str(i).encode()
        await rig.backend.send_eof()
        await rig.client.until_close()
    assert rig.outcome is not None
    assert rig.outcome.by == "backend"


async def test_backend_read_timeout_is_1011(autojump_clock: trio.testing.MockClock, transport: Transport) -> None:
    rig = Rig(transport, settings=TunnelSettings(backend_read_timeout=3, max_read_idle=60))
    async with running(rig):
        _, close = await rig.client.until_close()
    assert close.code == 1011
    assert rig.outcome is not None
    assert (rig.outcome.code, rig.outcome.by) == (1011, "backend")


async def test_backend_write_failure_is_1011(autojump_clock: trio.testing.MockClock, transport: Transport) -> None:
    rig = Rig(transport)
    rig.stop_backend_reads()
    async with running(rig):
        await rig.client.send(ws.TextMessage("nobody listens"))
        _, close = await rig.client.until_close()
    assert close.code == 1011
    assert rig.outcome is not None
    assert rig.outcome.by == "backend"
    assert transport.entered == (1 if transport.mode == "hub" else 0)  # the path under test was taken


async def test_backend_write_timeout_is_1011(autojump_clock: trio.testing.MockClock) -> None:
    backend_peer, backend_end = trio.testing.lockstep_stream_pair()  # the peer never reads
    rig = Rig(settings=TunnelSettings(backend_write_timeout=5), backend_side=(backend_peer, backend_end))
    async with running(rig):
        await rig.client.send(ws.TextMessage("stuck"))
        _, close = await rig.client.until_close()
    assert close.code == 1011
    assert rig.outcome is not None
    assert rig.outcome.reason == "backend write timeout"


# -- pings -----------------------------------------------------------------------------------------


async def test_answered_pings_keep_the_tunnel_alive(
    autojump_clock: trio.testing.MockClock, transport: Transport
) -> None:
    answered = 10
    rig = Rig(transport, settings=TunnelSettings(ping_interval=10, pong_timeout=2, max_read_idle=25))
    pings: list[bytes] = []
    async with running(rig):
        while True:
            event = await rig.client.next_event()
            if isinstance(event, ws.CloseConnection):
                await rig.client.send(event.response())
                break
            assert isinstance(event, ws.Ping)
            pings.append(bytes(event.payload))
            if len(pings) <= answered:
                assert not rig.done.is_set()
                await rig.client.send(event.response())
    # Ten pongs carried the tunnel through 100 s (four times max-read-idle);
    # the eleventh ping went unanswered.
    assert pings == [b"ping"] * (answered + 1)
    assert event.code == 1011
    assert rig.outcome is not None
    assert (rig.outcome.code, rig.outcome.by) == (1011, "ping")


async def test_unanswered_ping_is_1011(autojump_clock: trio.testing.MockClock, transport: Transport) -> None:
    rig = Rig(transport, settings=TunnelSettings(ping_interval=5))
    async with running(rig):
        assert isinstance(await rig.client.next_event(), ws.Ping)
        _, close = await rig.client.until_close()
    assert close.code == 1011
    assert rig.outcome is not None
    assert rig.outcome.by == "ping"


# -- text framing ----------------------------------------------------------------------------------


async def test_utf8_split_across_backend_writes(autojump_clock: trio.testing.MockClock, transport: Transport) -> None:
    text = "h\u00e9\u2603\U0001f600!"
    data = text.encode()
    rig = Rig(transport)
    async with running(rig):
        for i in range(len(data)):  # one backend write (and read) per byte
            await rig.backend.send_all(data[i : i + 1])
            await trio.sleep(1)
        await rig.backend.send_eof()
        messages, close = await rig.client.until_close()
    # wsproto's client fails a text frame that is not valid UTF-8 (1007); each arrived whole.
    assert close.code == 1001
    assert messages == ["h", "\u00e9", "\u2603", "\U0001f600", "!"]


async def test_incomplete_utf8_at_backend_eof_is_replaced(
    autojump_clock: trio.testing.MockClock, transport: Transport
) -> None:
    rig = Rig(transport)
    await rig.backend.send_all(b"ok\xe2\x98")
    await rig.backend.send_eof()
    async with running(rig):
        messages, close = await rig.client.until_close()
    assert "".join(messages) == "ok\ufffd"  # type: ignore[arg-type]
    assert close.code == 1001


# -- cancellation and half-close -----------------------------------------------------------------


async def test_cancellation_sends_1001_shutdown(autojump_clock: trio.testing.MockClock, transport: Transport) -> None:
    rig = Rig(transport)

    async def tunnel(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await rig.run()
        assert scope.cancelled_caught  # Cancelled propagated out of run_tunnel

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            scope = await nursery.start(tunnel)
            await rig.client.send(ws.TextMessage("hi"))
            assert await _read_exactly(rig.backend, 2) == b"hi"
            scope.cancel()
            _, close = await rig.client.until_close()
    assert close.code == 1001
    assert "shutting down" in (close.reason or "")
    assert rig.outcome is None  # run_tunnel raised Cancelled instead of returning


async def test_client_eof_half_closes_backend_and_tunnel_lives_on(
    autojump_clock: trio.testing.MockClock, transport: Transport
) -> None:
    rig = Rig(transport)
    async with running(rig):
        await rig.client.send(ws.TextMessage("request"))
        await rig.client.stream.send_eof()  # TCP half-close, no CLOSE frame
        assert await _read_until_eof(rig.backend) == b"request"
        await trio.sleep(1)
        assert not rig.done.is_set()
        await rig.backend.send_all(b"late answer")
        assert await rig.client.next_message() == "late answer"
        await rig.backend.send_eof()
        messages, close = await rig.client.until_close(reply=False)
    assert messages == []
    assert close.code == 1001
    assert rig.outcome is not None
    assert rig.outcome.by == "backend"
    assert transport.entered == (1 if transport.mode == "hub" else 0)  # the path under test was taken


# -- backpressure ----------------------------------------------------------------------------------


class MeteredOneWay:
    """A one-way memory stream that moves bytes only when the reader asks.

    The writer's :class:`~trio.testing.MemorySendStream` keeps what it wrote
    until the reader calls ``receive_some``; each call then pumps at most
    ``READ_SIZE`` bytes.  ``pumped`` is how much the reader has taken, so a
    reader that stops reading leaves the rest in the writer's stream.
    """

    def __init__(self) -> None:
        self.send = trio.testing.MemorySendStream()
        self.receive = trio.testing.MemoryReceiveStream(receive_some_hook=self._pump)
        self.pumped = 0

    async def _pump(self) -> None:
        try:
            data = self.send.get_data_nowait(READ_SIZE)
        except trio.WouldBlock:
            return
        self.pumped += len(data)
        self.receive.put_data(data)


async def test_backend_that_never_reads_stops_client_reads(autojump_clock: trio.testing.MockClock) -> None:
    frame_size, frames = 64 * 1024, 64  # 4 MiB from a fast client
    payload = bytes(i % 249 for i in range(frame_size * frames))
    upstream = MeteredOneWay()
    client_writer = WsClient(trio.StapledStream(upstream.send, trio.testing.MemoryReceiveStream()))
    for i in range(frames):
        await client_writer.send(ws.BytesMessage(payload[i * frame_size : (i + 1) * frame_size]))
    down_send, down_receive = trio.testing.memory_stream_one_way_pair()
    backend_peer, backend_end = trio.testing.lockstep_stream_pair()  # no buffer at all
    rig = Rig(
        binary=True,
        settings=TunnelSettings(max_read_idle=0, max_write_idle=0),
        client_side=(
            trio.StapledStream(trio.testing.MemorySendStream(), down_receive),
            trio.StapledStream(down_send, upstream.receive),
        ),
        backend_side=(backend_peer, backend_end),
    )
    async with running(rig) as nursery:
        await trio.sleep(10)  # plenty of (virtual) time for an unbounded reader to take everything
        assert not rig.done.is_set()
        assert 0 < upstream.pumped <= 2 * READ_SIZE
        # Now the backend reads: the tunnel resumes and every byte arrives, in order.
        assert await _read_exactly(backend_peer, len(payload)) == payload
        assert upstream.pumped > len(payload)
        nursery.cancel_scope.cancel()


async def test_client_that_never_reads_stops_backend_reads(autojump_clock: trio.testing.MockClock) -> None:
    total = 4 << 20
    data = bytes(i % 247 for i in range(total))
    downstream = MeteredOneWay()
    await downstream.send.send_all(data)  # a fast backend: everything written up front
    to_client_send, to_client_receive = trio.testing.lockstep_stream_one_way_pair()  # no buffer at all
    client_end = trio.StapledStream(trio.testing.MemorySendStream(), to_client_receive)
    server_end = trio.StapledStream(to_client_send, trio.testing.MemoryReceiveStream())
    rig = Rig(
        binary=True,
        settings=TunnelSettings(max_read_idle=0, max_write_idle=0),
        client_side=(client_end, server_end),
        backend_side=(
            trio.StapledStream(downstream.send, trio.testing.MemoryReceiveStream()),
            trio.StapledStream(trio.testing.MemorySendStream(), downstream.receive),
        ),
    )
    async with running(rig) as nursery:
        await trio.sleep(10)
        assert not rig.done.is_set()
        assert 0 < downstream.pumped <= 2 * READ_SIZE
        received = b""
        while len(received) < total:
            received += bytes(await rig.client.next_message())  # type: ignore[arg-type]
        assert received == data
        nursery.cancel_scope.cancel()


async def test_client_that_stops_reading_for_max_write_idle_ends_tunnel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    to_client_send, to_client_receive = trio.testing.lockstep_stream_one_way_pair()  # the client never reads
    client_up_send, client_up_receive = trio.testing.memory_stream_one_way_pair()
    rig = Rig(
        settings=TunnelSettings(max_write_idle=30, max_read_idle=0),
        client_side=(
            trio.StapledStream(client_up_send, to_client_receive),
            trio.StapledStream(to_client_send, client_up_receive),
        ),
    )
    async with running(rig):
        await rig.backend.send_all(b"x" * 1000)
    assert rig.outcome is not None
    assert rig.outcome.code is None  # a frame may be half-written: nothing more goes to that client
    assert rig.outcome.by == "client"
