"""Per-backend ``max-connections`` with a bounded wait queue (issue 13, limits; nginx ``max_conns``).

A backend at its limit is not chosen; when every backend is, a request
waits in the route's queue (first come, first served) until a connection
ends, for at most ``queue-timeout`` seconds and with at most ``queue-size``
others, and then gets 503.
"""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

import wstrio
from tests.helpers import RawClient, RawResponse, client_frame, echo_route, serve_echo_tcp, start_server

pytestmark = pytest.mark.usefixtures("hub_switch")


def _route(ports: list[int], **options: object) -> dict[str, object]:
    route = echo_route(ports[0], **options)
    route["backend"] = [{"host": "127.0.0.1", "port": p, "max-connections": 1} for p in ports]
    return route


async def _server(nursery: trio.Nursery, ports: list[int], **options: object) -> wstrio.Server:
    return await start_server(nursery, {"server": {"listen": ["127.0.0.1:0"]}, "route": [_route(ports, **options)]})


async def _open(port: int) -> RawClient:
    client = await RawClient.tcp(port)
    assert (await client.ws_handshake()).status == 101
    return client


async def test_a_request_waits_for_the_backend_and_is_served_in_turn(nursery: trio.Nursery) -> None:
    echo = await serve_echo_tcp(nursery)
    server = await _server(nursery, [echo])
    first = await _open(server.port)
    second = await RawClient.tcp(server.port)
    answers: list[RawResponse] = []
    answered = trio.Event()

    async def handshake() -> None:
        answers.append(await second.ws_handshake())
        answered.set()

    nursery.start_soon(handshake)
    await trio.testing.wait_all_tasks_blocked(cushion=0.1)
    assert answers == [], "the backend's max-connections was not kept"
    await first.aclose()  # its backend connection ends: the waiting request's turn
    with trio.fail_after(10):
        await answered.wait()
    assert answers[0].status == 101
    await second.send(client_frame(0x1, b"in turn\n"))
    assert (await second.read_frame()).payload == b"in turn\n"
    await second.aclose()


async def test_a_full_backend_is_skipped_for_one_that_is_free(nursery: trio.Nursery) -> None:
    ports = [await serve_echo_tcp(nursery), await serve_echo_tcp(nursery)]
    server = await _server(nursery, ports)
    clients = [await _open(server.port), await _open(server.port)]  # one on each, neither waits
    for client in clients:
        await client.send(client_frame(0x1, b"x\n"))
        assert (await client.read_frame()).payload == b"x\n"
        await client.aclose()


async def test_a_full_queue_is_503_at_once(nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    echo = await serve_echo_tcp(nursery)
    server = await _server(nursery, [echo], **{"queue-size": 1})
    first = await _open(server.port)
    waiting = await RawClient.tcp(server.port)
    third = await RawClient.tcp(server.port)
    async with trio.open_nursery() as queued:
        queued.start_soon(waiting.ws_handshake)  # waits in the queue
        await trio.testing.wait_all_tasks_blocked(cushion=0.1)
        assert (await third.ws_handshake()).status == 503
        queued.cancel_scope.cancel()
    assert any("queue-size = 1" in r.getMessage() for r in caplog.records)
    for client in (first, waiting, third):
        await client.aclose()


async def test_the_queue_timeout_is_503(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "wstrio")
    echo = await serve_echo_tcp(nursery)
    server = await _server(nursery, [echo], **{"queue-timeout": 5})
    first = await _open(server.port)
    second = await RawClient.tcp(server.port)
    started = trio.current_time()
    assert (await second.ws_handshake()).status == 503
    assert 5 <= trio.current_time() - started < 6
    assert any("queue-timeout" in r.getMessage() for r in caplog.records)
    await first.aclose()
    await second.aclose()


def test_the_config_keys() -> None:
    config = wstrio.config_from_mapping({"route": [_route([1], **{"queue-size": 7, "queue-timeout": 2.5})]})
    route = config.routes[0]
    assert (route.backends[0].max_connections, route.queue_size, route.queue_timeout) == (1, 7, 2.5)
    with pytest.raises(wstrio.ConfigError, match=r"route\[0\]\.backend\[0\]\.max-connections"):
        wstrio.config_from_mapping(
            {"route": [{"path": "/", "handler": "wstunnel", "backend": [{"port": 1, "max-connections": -1}]}]}
        )
