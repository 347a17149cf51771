"""The CLOSE after a client's protocol error arrives whole, even while wstrio is mid-write (issue 13).

A backend floods a client that is not reading, so wstrio's write of a
data frame to the client waits; then the client breaks the protocol
(invalid UTF-8).  Before, the tunnel's end cancelled that write halfway
through a frame: the client got a truncated frame and an EOF (1006), never
the CLOSE 1007 it was owed.  Now the frame is finished and the CLOSE
follows; and what the client sends after its error is read and dropped
(bounded) rather than left unread, which would make the kernel reset the
connection and destroy the CLOSE.  Found by the handshake fuzzer.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tests.helpers import OP_CLOSE, RawClient, client_frame, echo_route, serve_tcp_backend, start_server

pytestmark = pytest.mark.usefixtures("hub_switch")

FLOOD = 64 << 20


async def test_close_1007_is_whole_after_a_blocked_write(nursery: trio.Nursery) -> None:
    sent = {"bytes": 0}

    async def flood(stream: trio.SocketStream) -> None:
        chunk = b"x" * 65536
        try:
            while sent["bytes"] < FLOOD:
                await stream.send_all(chunk)
                sent["bytes"] += len(chunk)
            await trio.sleep_forever()
        except trio.BrokenResourceError:
            return

    port = await serve_tcp_backend(nursery, flood)
    server = await start_server(nursery, {"server": {"listen": ["127.0.0.1:0"]}, "route": [echo_route(port)]})
    client = await RawClient.tcp(server.port)
    assert (await client.ws_handshake()).status == 101
    # Everything blocks once the client's socket is full: the backend in its
    # send, wstrio in its write to the client (the only reason it stops
    # reading the backend).
    await trio.testing.wait_all_tasks_blocked(cushion=0.2)
    assert sent["bytes"] < FLOOD, "the backend was never held back: wstrio's write to the client did not wait"
    await client.send(client_frame(0x1, b"\xff\xfe bad") + b"more after the error" * 1000)
    total = 0
    while True:
        frame = await client.read_frame()  # AssertionError at EOF mid-frame: the bug
        if frame.opcode == OP_CLOSE:
            break
        assert set(frame.payload) <= {ord("x")}
        total += len(frame.payload)
    assert int.from_bytes(frame.payload[:2], "big") == 1007
    assert total > 0
    await client.aclose()
