"""``health-path``: a load balancer's health check, answered before any route or limit (issue 15, item 6)."""

from __future__ import annotations

import pytest
import trio

import wstrio
from tests.helpers import RawClients, make_config, start_server


async def test_health_path_is_ok_and_outside_the_limits(nursery: trio.Nursery, raw: RawClients) -> None:
    # One request a second per address: a balancer checking more often must still get 200.
    config = {"server": {"health-path": "/healthz", "request-rate": 1, "request-burst": 1}}
    server = await start_server(nursery, config)
    client = await raw.tcp(server.port)
    for _ in range(5):
        response = await client.request(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (response.status, response.body) == (200, b"ok\n")
    head = await client.request(b"HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n", method="HEAD")
    assert head.status == 200
    # HTTP/1.0 without Host, as HAProxy's `option httpchk GET /healthz` sends it.
    check = await raw.tcp(server.port)
    assert (await check.request(b"GET /healthz HTTP/1.0\r\n\r\n")).status == 200
    # Anything else is a request like any other: the rate limit applies.
    statuses = [(await client.request(b"GET /other HTTP/1.1\r\nHost: a\r\n\r\n")).status for _ in range(3)]
    assert 429 in statuses


async def test_without_health_path_it_is_an_ordinary_path(nursery: trio.Nursery, raw: RawClients) -> None:
    server = await start_server(nursery, {"server": {}})
    client = await raw.tcp(server.port)
    assert (await client.request(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")).status == 404


def test_health_path_must_be_a_path() -> None:
    with pytest.raises(wstrio.ConfigError, match=r"server\.health-path: must be a path starting with '/'"):
        make_config({"server": {"health-path": "healthz"}})
