"""The hub's one interface: enter with two sockets and two handlers, get one HandBack.

Each reason a connection leaves the hub, produced by the real tunnel and relay
handlers on real sockets (socket pairs; TCP where only TCP can do it, for a
reset), and what the tunnel and the relay make of a ``fault``.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import AsyncIterator

import pytest
import trio
from wsproto import events as ws
from wsproto.connection import Connection, ConnectionType

from tests.streams_support import socket_stream_pair
from wstrio._io.streams.fastpath.handback import HandBack
from wstrio._io.streams.fastpath.hub import Handler, Hub
from wstrio._io.streams.fastpath.relay import relay_handlers
from wstrio._io.streams.fastpath.tunnel import tunnel_handlers
from wstrio._io.streams.relay import _Relay, relay
from wstrio._io.streams.tunnel import Outcome, TunnelSettings, _Tunnel, run_tunnel
from wstrio._sansio.websocket.codec import Close, Ping, WebSocketCodec


@pytest.fixture
async def sockets() -> AsyncIterator[list[trio.SocketStream]]:
    """Every socket a test makes, closed after it."""
    made: list[trio.SocketStream] = []
    yield made
    for stream in made:
        stream.socket.close()


@pytest.fixture
async def hub(nursery: trio.Nursery) -> Hub:
    hub = Hub(enabled=True)
    await nursery.start(hub.run)
    return hub


def pair(sockets: list[trio.SocketStream]) -> tuple[trio.SocketStream, trio.SocketStream]:
    ours, theirs = socket_stream_pair()
    sockets += (ours, theirs)
    return ours, theirs


def tcp_pair(sockets: list[trio.SocketStream]) -> tuple[trio.SocketStream, trio.SocketStream]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    ours, theirs = (
        trio.SocketStream(trio.socket.from_stdlib_socket(a)),
        trio.SocketStream(trio.socket.from_stdlib_socket(b)),
    )
    sockets += (ours, theirs)
    return ours, theirs


def reset(stream: trio.SocketStream) -> None:
    """Close with an RST: the peer's next read fails with ECONNRESET."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


def fill(stream: trio.SocketStream) -> None:
    """Make ``stream``'s next write block: fill its send buffer (nobody reads the peer)."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    try:
        while True:
            os.write(stream.socket.fileno(), b"\0" * 65536)
    except BlockingIOError:
        pass


def frames(*events: ws.Event) -> bytes:
    client = Connection(ConnectionType.CLIENT)
    return b"".join(client.send(e) for e in events)


# -- the relay's handlers ---------------------------------------------------------------


async def test_relay_handlers_give_each_reason(sockets: list[trio.SocketStream]) -> None:
    client, relay_client = pair(sockets)
    backend, relay_backend = pair(sockets)
    state = _Relay(0, 0)
    on_client, on_backend = relay_handlers(state, relay_client.socket.fileno(), relay_backend.socket.fileno())

    assert on_client() is None  # nothing to read: stay
    await client.send_all(b"up")
    assert on_client() is None  # copied
    assert await backend.receive_some() == b"up"
    assert state.written == {"client": 0, "backend": 2}

    fill(relay_client)  # the client reads nothing
    await backend.send_all(b"x" * 50_000)
    handback = on_backend()
    assert handback is not None
    assert handback.why == "blocked"
    assert handback.to_client  # what did not fit
    assert handback.to_backend == b""

    await client.send_eof()
    assert on_client() == HandBack("client_eof")
    await backend.send_eof()
    assert on_backend() == HandBack("backend_eof")


async def test_relay_handlers_report_failures_by_operation(sockets: list[trio.SocketStream]) -> None:
    client, relay_client = tcp_pair(sockets)
    backend, relay_backend = pair(sockets)
    state = _Relay(0, 0)
    on_client, on_backend = relay_handlers(state, relay_client.socket.fileno(), relay_backend.socket.fileno())

    backend.socket.shutdown(socket.SHUT_RD)  # the backend reads no more
    await client.send_all(b"lost")
    handback = on_client()
    assert handback is not None
    assert handback.why == "backend_write_failed"
    assert isinstance(handback.error, OSError)

    reset(client)
    await trio.sleep(0.05)
    handback = on_client()
    assert handback is not None
    assert handback.why == "client_read_failed"
    assert isinstance(handback.error, ConnectionResetError)
    await backend.send_all(b"to nobody")
    handback = on_backend()
    assert handback is not None
    assert handback.why == "client_write_failed"


# -- the tunnel's handlers ------------------------------------------------------------------


def tunnel_in(
    tunnel_client: trio.SocketStream, tunnel_backend: trio.SocketStream, *, binary: bool = True
) -> tuple[_Tunnel, Handler, Handler, Handler]:
    tunnel = _Tunnel(tunnel_client, tunnel_backend, WebSocketCodec(binary=binary), TunnelSettings())
    return (tunnel, *tunnel_handlers(tunnel, tunnel_client.socket.fileno(), tunnel_backend.socket.fileno()))


async def until_handback(handler: Handler, fd: int) -> HandBack:
    """Call ``handler`` (the hub would, while its socket is readable) until it hands back."""
    while True:
        await trio.lowlevel.wait_readable(fd)
        if (handback := handler()) is not None:
            return handback


async def test_tunnel_handlers_move_data_and_hand_back_events(sockets: list[trio.SocketStream]) -> None:
    client, tunnel_client = pair(sockets)
    backend, tunnel_backend = pair(sockets)
    tunnel, forward, on_client, _on_backend = tunnel_in(tunnel_client, tunnel_backend)
    assert forward() is None  # nothing pipelined
    await client.send_all(frames(ws.BytesMessage(b"plain data")))
    assert on_client() is None
    assert await backend.receive_some() == b"plain data"
    assert tunnel.bytes_to_backend == 10

    await client.send_all(frames(ws.BytesMessage(b"and a ping"), ws.Ping(b"p")))
    assert on_client() == HandBack("events", events=(Ping(b"p"),))
    assert await backend.receive_some() == b"and a ping"

    await client.send_all(frames(ws.CloseConnection(1000)))
    assert on_client() == HandBack("events", events=(Close(1000, "", False),))


async def test_tunnel_handlers_hand_back_what_would_block(sockets: list[trio.SocketStream]) -> None:
    client, tunnel_client = pair(sockets)
    backend, tunnel_backend = pair(sockets)
    _tunnel, _forward, on_client, on_backend = tunnel_in(tunnel_client, tunnel_backend)
    fill(tunnel_backend)  # the backend reads nothing
    await client.send_all(frames(ws.BytesMessage(b"y" * 50_000), ws.CloseConnection(1000)))
    handback = await until_handback(on_client, tunnel_client.socket.fileno())
    assert handback.why == "blocked"
    assert handback.to_backend
    assert handback.to_client == b""

    fill(tunnel_client)  # the client reads nothing
    await backend.send_all(b"z" * 50_000)
    handback = await until_handback(on_backend, tunnel_backend.socket.fileno())
    assert handback.why == "blocked"
    assert handback.to_client
    assert handback.to_backend == b""


async def test_tunnel_handlers_report_failures_by_operation(sockets: list[trio.SocketStream]) -> None:
    client, tunnel_client = pair(sockets)
    backend, tunnel_backend = tcp_pair(sockets)
    _tunnel, _forward, on_client, on_backend = tunnel_in(tunnel_client, tunnel_backend)
    backend.socket.shutdown(socket.SHUT_RD)
    reset(backend)
    await trio.sleep(0.05)
    handback = on_backend()
    assert handback is not None
    assert handback.why == "backend_read_failed"
    assert isinstance(handback.error, ConnectionResetError)
    await client.send_all(frames(ws.BytesMessage(b"to a reset backend")))
    handback = await until_handback(on_client, tunnel_client.socket.fileno())
    assert handback.why == "backend_write_failed"
    assert isinstance(handback.error, OSError)


async def test_tunnel_handlers_report_eof_and_client_failures(sockets: list[trio.SocketStream]) -> None:
    client, tunnel_client = pair(sockets)
    backend, tunnel_backend = pair(sockets)
    _tunnel, _forward, on_client, on_backend = tunnel_in(tunnel_client, tunnel_backend, binary=False)
    await backend.send_eof()
    assert on_backend() == HandBack("backend_eof")
    await client.send_eof()
    assert on_client() == HandBack("client_eof")

    client, tunnel_client = pair(sockets)
    backend, tunnel_backend = pair(sockets)
    _tunnel, _forward, on_client, on_backend = tunnel_in(tunnel_client, tunnel_backend, binary=False)
    client.socket.shutdown(socket.SHUT_RD)  # the client reads no more
    await backend.send_all(b"for nobody")
    handback = on_backend()
    assert handback is not None
    assert handback.why == "client_write_failed"


# -- the hub: faults ---------------------------------------------------------------------------


async def test_a_handler_that_raises_is_a_fault_and_the_hub_goes_on(
    hub: Hub, sockets: list[trio.SocketStream], caplog: pytest.LogCaptureFixture
) -> None:
    (a, a_in_hub), (b, b_in_hub) = pair(sockets), pair(sockets)
    (c, c_in_hub), (d, d_in_hub) = pair(sockets), pair(sockets)

    def broken() -> HandBack | None:
        msg = "a bug in the fast path"
        raise RuntimeError(msg)

    def drain(stream: trio.SocketStream) -> HandBack | None:
        if not os.read(stream.socket.fileno(), 100):
            return HandBack("client_eof")
        return None

    results: list[HandBack] = []

    async def visit(x: trio.SocketStream, y: trio.SocketStream, on_x: object) -> None:
        results.append(await hub.enter(x.socket.fileno(), y.socket.fileno(), on_x, lambda: None))  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(visit, a_in_hub, b_in_hub, broken)
        nursery.start_soon(visit, c_in_hub, d_in_hub, lambda: drain(c_in_hub))
        await trio.sleep(0.05)
        await a.send_all(b"boom")
        await trio.sleep(0.05)
        assert len(results) == 1
        (fault,) = results
        assert fault.why == "fault"
        assert isinstance(fault.error, RuntimeError)
        assert "the hub's fast path failed" in caplog.text
        # The other visitor is still served by the same hub.
        await c.send_all(b"still here")
        await trio.sleep(0.05)
        assert len(results) == 1
        await c.send_eof()
    assert results[1] == HandBack("client_eof")
    assert hub.entered == 2
    del b, d


async def test_sockets_that_cannot_be_registered_are_a_fault(hub: Hub, sockets: list[trio.SocketStream]) -> None:
    _peer, stream = pair(sockets)
    fd = stream.socket.fileno()
    handback = await hub.enter(fd, fd, lambda: None, lambda: None)  # the same socket twice
    assert handback.why == "fault"
    assert isinstance(handback.error, OSError)
    # Nothing was left registered: the socket can enter again.
    other_peer, other = pair(sockets)
    with trio.move_on_after(0.05):
        await hub.enter(fd, other.socket.fileno(), lambda: None, lambda: None)
    del other_peer


async def test_a_tunnel_ends_1011_by_fault_when_the_hub_fails_it(hub: Hub, sockets: list[trio.SocketStream]) -> None:
    client, tunnel_end = pair(sockets)
    outcome: list[Outcome] = []

    async def run() -> None:
        # Client and backend on one socket: the hub cannot register it twice.
        outcome.append(await run_tunnel(tunnel_end, tunnel_end, WebSocketCodec(binary=True), TunnelSettings(), hub=hub))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        conn = Connection(ConnectionType.CLIENT)
        events: list[ws.Event] = []
        while not events:
            conn.receive_data(await client.receive_some())
            events = list(conn.events())
        assert events == [ws.CloseConnection(1011, "internal error in the hub")]
        await client.send_all(conn.send(ws.CloseConnection(1011)))
    assert outcome == [Outcome(1011, "internal error in the hub", "fault")]


async def test_a_relay_ends_with_an_error_when_the_hub_fails_it(hub: Hub, sockets: list[trio.SocketStream]) -> None:
    _client, relay_end = pair(sockets)
    outcome = await relay(relay_end, b"", relay_end, b"", max_read_idle=0, max_write_idle=0, hub=hub)
    assert outcome.error == "internal error in the relay's fast path"


async def test_cancelling_a_visit_unregisters_its_sockets(hub: Hub, sockets: list[trio.SocketStream]) -> None:
    _a, a_in_hub = pair(sockets)
    _b, b_in_hub = pair(sockets)
    fds = a_in_hub.socket.fileno(), b_in_hub.socket.fileno()
    with trio.move_on_after(0.05) as scope:
        await hub.enter(*fds, lambda: None, lambda: None)
    assert scope.cancelled_caught
    with trio.move_on_after(0.05) as scope:
        await hub.enter(*fds, lambda: None, lambda: None)  # registrable again: no fault
    assert scope.cancelled_caught


async def test_a_switched_off_hub_is_not_available(nursery: trio.Nursery) -> None:
    hub = Hub(enabled=False)
    assert not hub.available
    await nursery.start(hub.run)
    assert not hub.available
    on = Hub()
    await nursery.start(on.run)
    assert on.available
