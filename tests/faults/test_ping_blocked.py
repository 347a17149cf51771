"""A PING that cannot be written within pong-timeout is a missed pong (issue 13, defect 5).

A client that stopped reading while its backend floods it was cut off only
by ``max-write-idle`` (360 s by default): the PING waited behind the
blocked data write and its pong timer never started.  Now writing the PING
and receiving the PONG share one ``pong-timeout`` deadline.  On Trio's
virtual clock, with real sockets.
"""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from tests.helpers import RawClient, echo_route, serve_tcp_backend, start_server


async def test_a_ping_stuck_behind_a_blocked_write_ends_the_tunnel(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def flood(stream: trio.SocketStream) -> None:
        chunk = b"x" * 65536
        try:
            while True:
                await stream.send_all(chunk)
        except trio.BrokenResourceError:
            return

    port = await serve_tcp_backend(nursery, flood)
    route = echo_route(port, **{"ping-interval": 5, "pong-timeout": 5})
    server = await start_server(nursery, {"server": {"listen": ["127.0.0.1:0"]}, "route": [route]})
    caplog.set_level(logging.INFO, "wstrio")
    client = await RawClient.tcp(server.port)
    client.timeout = 1000
    assert (await client.ws_handshake()).status == 101
    await trio.sleep(30)  # not reading; max-write-idle is 360 s
    ended = [r.getMessage() for r in caplog.records if r.name == "wstrio.access" and "closed 1011" in r.getMessage()]
    assert ended, "the tunnel was still open after 30 s"
    assert "no pong within pong-timeout (the PING could not be written" in ended[0]
    await client.aclose()
