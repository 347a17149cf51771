"""Tunnels and relays whose backend fails mid-stream: no silent loss, ever.

Each case streams a seeded random amount of data, in seeded random pieces,
through wstrio to an echo backend that fails at a seeded random byte:

* ``stall``: the backend stops reading for longer than ``max-read-idle``,
  then reads and echoes the rest.  Everything must arrive (backpressure is
  not idleness).
* ``close``: the backend echoes what it read so far, then ends its side
  (FIN) and reads on without answering.  The client gets exactly those
  bytes, then the end (CLOSE 1001; a relay: EOF).  (A backend that closes
  with unread input makes its kernel send a reset: that is ``reset``.)
* ``reset``: the backend echoes what it read, then resets (RST).  The client
  gets a prefix of those bytes, then a reported failure (CLOSE 1011; a relay:
  a reset, never a clean EOF).
* ``refuse``: nothing listens.  The handshake gets 503, never a 101.

Both the terminated WebSocket (wstunnel) and the byte relay (a proxy route
with ``upgrade = true``) are checked, with the hub on and off, on Trio's
virtual clock (so a 20 s stall costs no real time).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import random
import socket
import struct
from typing import Any

import pytest
import trio

import wstrio
from tests.helpers import (
    OP_BINARY,
    OP_CLOSE,
    RawClient,
    RawClients,
    client_frame,
    handshake_request,
    start_server,
    unused_tcp_port,
)

pytestmark = pytest.mark.usefixtures("hub_switch")


SEEDS = range(3)
SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
IDLE = 10.0
STALL = 25.0


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


class FaultyEcho:
    """An echo backend that fails once, ``at`` bytes into each connection."""

    def __init__(self, kind: str, at: int, *, http_upgrade: bool) -> None:
        self.kind = kind
        self.at = at
        self.http_upgrade = http_upgrade
        self.received = bytearray()

    async def __call__(self, stream: trio.SocketStream) -> None:
        if self.http_upgrade:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                head += chunk
            head, _, rest = head.partition(b"\r\n\r\n")
            await stream.send_all(SWITCH)
        else:
            rest = b""
        failed = False
        pending = rest
        while True:
            if not pending:
                try:
                    pending = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return
                if not pending:
                    await stream.send_eof()
                    return
            if failed or len(self.received) + len(pending) < self.at:
                self.received += pending
                await stream.send_all(pending)
                pending = b""
                continue
            # The fault point is in this piece: echo up to it, then fail.
            cut = self.at - len(self.received)
            head, pending = pending[:cut], pending[cut:]
            self.received += head
            await stream.send_all(head)
            failed = True
            if self.kind == "stall":
                await trio.sleep(STALL)
            elif self.kind == "close":
                # A clean end: FIN, and keep reading (discarding) so the
                # kernel has no unread data to answer with a reset.
                await stream.send_eof()
                with contextlib.suppress(trio.BrokenResourceError):
                    while await stream.receive_some(65536):
                        pass
                await stream.aclose()
                return
            elif self.kind == "reset":
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                await stream.aclose()
                return


async def _backend(nursery: trio.Nursery, handler: FaultyEcho) -> int:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


def _plan(seed: int, kind: str) -> tuple[bytes, list[int], int]:
    rng = random.Random(f"{kind}-{seed}")
    if kind == "stall":
        # Far more than the loopback's socket buffers hold after the stall
        # point, so the client is still sending (blocked by us) throughout
        # the stall: never idle.  (A client that has sent everything and
        # waits while the backend stalls *is* silent; max-read-idle may end
        # that tunnel, with 1001.)
        total = rng.randrange(12_000_000, 16_000_000)
        data = rng.randbytes(total)
        at = rng.randrange(1, total // 8)
    else:
        total = rng.randrange(200_000, 3_000_000)
        data = rng.randbytes(total)
        at = rng.randrange(1, total)
    sizes = []
    left = total
    while left:
        size = min(left, rng.choice([1, 7, 125, 126, 1000, 65535, 65536, 70000, 300_000]))
        sizes.append(size)
        left -= size
    return data, sizes, at


async def _server(nursery: trio.Nursery, port: int, handler: str) -> wstrio.Server:
    route: dict[str, Any] = {
        "path": "/t/",
        "handler": handler,
        "backend": [{"host": "127.0.0.1", "port": port, "disable-time": 0}],
    }
    if handler == "wstunnel":
        route["frame-type"] = "binary"
    else:
        route["upgrade"] = True
    return await start_server(
        nursery,
        {"server": {"max-read-idle": IDLE, "max-write-idle": 3 * STALL, "shutdown-timeout": 0.25}, "route": [route]},
    )


async def _run_wstunnel(client: RawClient, data: bytes, sizes: list[int]) -> tuple[bytes, int | None]:
    """Send ``data`` in frames of ``sizes`` while reading the echo; returns (echo, close code or None)."""
    echoed = bytearray()
    code: list[int | None] = []

    async def read() -> None:
        while True:
            frame = await client.read_frame()
            if frame.opcode == OP_CLOSE:
                code.append(frame.close_code)
                return
            echoed.extend(frame.payload)
            if len(echoed) == len(data):
                await client.send(client_frame(OP_CLOSE, struct.pack("!H", 1000)))

    async def write() -> None:
        offset = 0
        for size in sizes:
            try:
                await client.send(client_frame(OP_BINARY, data[offset : offset + size]))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            offset += size

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        await read()
        nursery.cancel_scope.cancel()
    return bytes(echoed), code[0] if code else None


async def _run_relay(client: RawClient, data: bytes, sizes: list[int]) -> tuple[bytes, str]:
    """Send raw bytes after the 101 while reading the echo; returns (echo, "eof" or "reset")."""
    echoed = bytearray()
    ending: list[str] = []

    async def read() -> None:
        while True:
            with trio.fail_after(120):
                try:
                    chunk = await client.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    ending.append("reset")
                    return
            if not chunk:
                ending.append("eof")
                return
            echoed.extend(chunk)
            if len(echoed) == len(data):
                ending.append("complete")
                return

    write_reset: list[bool] = []

    async def write() -> None:
        offset = 0
        for size in sizes:
            try:
                await client.stream.send_all(data[offset : offset + size])
            except trio.BrokenResourceError:
                # The reset may be reported to the write (then the read sees EOF).
                write_reset.append(True)
                return
            except trio.ClosedResourceError:
                return
            offset += size

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        await read()
        nursery.cancel_scope.cancel()
    if ending[0] == "eof" and write_reset:
        return bytes(echoed), "reset"
    return bytes(echoed), ending[0]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["stall", "close", "reset"])
async def test_wstunnel_backend_fault(
    nursery: trio.Nursery, raw: RawClients, autojump_clock: trio.testing.MockClock, kind: str, seed: int
) -> None:
    data, sizes, at = _plan(seed, kind)
    backend = FaultyEcho(kind, at, http_upgrade=False)
    server = await _server(nursery, await _backend(nursery, backend), "wstunnel")
    client = await raw.tcp(server.port)
    client.timeout = 4 * STALL  # virtual seconds: a stall sends nothing for STALL
    await client.send(handshake_request("/t/"))
    assert (await client.read_head()).status == 101
    echoed, code = await _run_wstunnel(client, data, sizes)
    case = f"seed={seed} total={len(data)} at={at} got={len(echoed)} code={code}"
    assert data.startswith(echoed), f"corrupted echo: {case}"
    if kind == "stall":
        assert _sha(echoed) == _sha(data), f"data lost behind a stalled backend: {case}"
        assert code == 1000, case
    elif kind == "close":
        assert _sha(echoed) == _sha(data[:at]), f"echo before the backend's close was lost: {case}"
        assert code == 1001, case
    else:
        assert len(echoed) <= at, case
        assert code == 1011, f"a reset backend must be reported: {case}"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["stall", "close", "reset"])
async def test_relay_backend_fault(
    nursery: trio.Nursery, raw: RawClients, autojump_clock: trio.testing.MockClock, kind: str, seed: int
) -> None:
    data, sizes, at = _plan(seed, kind)
    backend = FaultyEcho(kind, at, http_upgrade=True)
    server = await _server(nursery, await _backend(nursery, backend), "proxy")
    client = await raw.tcp(server.port)
    await client.send(handshake_request("/t/"))
    assert (await client.read_head()).status == 101
    echoed, ending = await _run_relay(client, data, sizes)
    case = f"seed={seed} total={len(data)} at={at} got={len(echoed)} ending={ending}"
    assert data.startswith(echoed), f"corrupted echo: {case}"
    if kind == "stall":
        assert (ending, _sha(echoed)) == ("complete", _sha(data)), f"data lost behind a stalled backend: {case}"
    elif kind == "close":
        assert (ending, _sha(echoed)) == ("eof", _sha(data[:at])), f"echo before the backend's close was lost: {case}"
    else:
        assert len(echoed) <= at, case
        assert ending == "reset", f"a reset backend must reach the client as a reset, not a clean end: {case}"


@pytest.mark.parametrize("handler", ["wstunnel", "proxy"])
async def test_refused_backend_is_503_never_101(nursery: trio.Nursery, raw: RawClients, handler: str) -> None:
    server = await _server(nursery, unused_tcp_port(), handler)
    for _ in range(3):
        client = await raw.tcp(server.port)
        response = await client.request(handshake_request("/t/"))
        assert response.status in (502, 503), response
