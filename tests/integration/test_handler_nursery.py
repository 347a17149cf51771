"""``serve(..., handler_nursery=...)``: connections outlive serve(), and so does what they use (issue 13, defect 7).

As with :func:`trio.serve_tcp`, connection tasks run in the caller's
nursery; cancelling ``serve`` stops accepting and leaves them running.
Before, the hub, the timers and the backend pools died with ``serve``: a
hub tunnel froze (no data, no close) and ``max-read-idle`` never fired.
Run with the hub on and off.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

import wstrio
from tests.helpers import RawClient, client_frame, echo_route, make_config, serve_echo_tcp

pytestmark = pytest.mark.usefixtures("hub_switch")


async def test_a_tunnel_still_carries_data_after_serve_is_cancelled(nursery: trio.Nursery) -> None:
    echo = await serve_echo_tcp(nursery)
    config = make_config({"server": {"listen": ["127.0.0.1:0"]}, "route": [echo_route(echo)]})
    async with trio.open_nursery() as serving:
        server: wstrio.Server = await serving.start(
            lambda task_status: wstrio.serve(config, handler_nursery=nursery, task_status=task_status)
        )
        client = await RawClient.tcp(server.port)
        assert (await client.ws_handshake()).status == 101
        await client.send(client_frame(0x1, b"before\n"))
        assert (await client.read_frame()).payload == b"before\n"
        serving.cancel_scope.cancel()
    # serve() has returned and no longer accepts; the tunnel in the handler nursery goes on.
    with pytest.raises(OSError, match="all attempts to connect"):
        await trio.open_tcp_stream("127.0.0.1", server.port)
    await client.send(client_frame(0x1, b"after\n"))
    assert (await client.read_frame()).payload == b"after\n"
    await client.aclose()


async def test_max_read_idle_still_ends_a_tunnel_after_serve_is_cancelled(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    echo = await serve_echo_tcp(nursery)
    config = make_config({"server": {"listen": ["127.0.0.1:0"], "max-read-idle": 5}, "route": [echo_route(echo)]})
    async with trio.open_nursery() as serving:
        server: wstrio.Server = await serving.start(
            lambda task_status: wstrio.serve(config, handler_nursery=nursery, task_status=task_status)
        )
        client = await RawClient.tcp(server.port)
        assert (await client.ws_handshake()).status == 101
        serving.cancel_scope.cancel()
    frame = await client.read_frame()
    assert frame.opcode == 0x8
    assert int.from_bytes(frame.payload[:2], "big") == 1001
    assert b"idle" in frame.payload[2:]
    await client.aclose()
