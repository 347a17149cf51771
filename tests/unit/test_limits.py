"""Per-client limits, sans I/O (wstrio._sansio.limits): keys, counters, token buckets, allow/deny."""

from __future__ import annotations

import ipaddress

import pytest

from wstrio._config import parse_networks
from wstrio._sansio.limits import ConnectionCounter, RateLimiter, allowed, client_address, client_key


def test_ipv4_is_its_own_key_and_mapped_ipv6_is_ipv4() -> None:
    assert client_key("192.0.2.7") == ipaddress.IPv4Address("192.0.2.7")
    assert client_key("::ffff:192.0.2.7") == ipaddress.IPv4Address("192.0.2.7")


def test_ipv6_clients_are_grouped_by_their_64() -> None:
    a = client_key("2001:db8:1:2:aaaa::1")
    b = client_key("2001:db8:1:2:ffff:1:2:3")
    c = client_key("2001:db8:1:3::1")
    assert a == b == ipaddress.IPv6Network("2001:db8:1:2::/64")
    assert c != a


@pytest.mark.parametrize("host", [None, "not an address", ""])
def test_unix_and_odd_clients_have_no_key(host: str | None) -> None:
    assert client_key(host) is None
    assert client_address(host) is None


def test_a_scoped_ipv6_address_loses_its_zone() -> None:
    assert client_address("fe80::1%eth0") == ipaddress.IPv6Address("fe80::1")


def test_connection_counter_refuses_over_the_limit_and_releases() -> None:
    counter = ConnectionCounter(2)
    key = client_key("10.0.0.1")
    other = client_key("10.0.0.2")
    assert counter.acquire(key)
    assert counter.acquire(key)
    assert not counter.acquire(key)
    assert counter.acquire(other)
    assert counter.held(key) == 2  # type: ignore[arg-type]
    counter.release(key)
    assert counter.acquire(key)
    counter.release(key)
    counter.release(key)
    counter.release(other)
    assert len(counter) == 0  # nothing kept for keys with nothing open


def test_no_limit_and_unix_clients_are_never_counted() -> None:
    assert all(ConnectionCounter(0).acquire(client_key("10.0.0.1")) for _ in range(1000))
    counter = ConnectionCounter(1)
    assert all(counter.acquire(None) for _ in range(10))
    assert len(counter) == 0


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    key = client_key("10.0.0.1")
    assert [limiter.take(key, 0.0) for _ in range(3)] == [None, None, None]
    assert limiter.take(key, 0.0) == 1  # half a second to the next token, rounded up
    assert limiter.take(key, 0.5) is None
    assert limiter.take(key, 0.5) == 1
    assert limiter.take(client_key("10.0.0.2"), 0.5) is None  # another address has its own bucket


def test_retry_after_is_the_whole_seconds_to_the_next_token() -> None:
    limiter = RateLimiter(rate=0.1, burst=1)
    key = client_key("10.0.0.1")
    assert limiter.take(key, 0.0) is None
    assert limiter.take(key, 0.0) == 10
    assert limiter.take(key, 4.0) == 6
    assert limiter.take(key, 10.0) is None


def test_a_refused_request_takes_no_token() -> None:
    limiter = RateLimiter(rate=1.0, burst=1)
    key = client_key("10.0.0.1")
    assert limiter.take(key, 0.0) is None
    for _ in range(100):
        assert limiter.take(key, 0.5) == 1
    assert limiter.take(key, 1.0) is None


def test_the_table_stays_bounded_under_a_flood_of_addresses() -> None:
    limiter = RateLimiter(rate=1.0, burst=5, max_tracked=1000)
    for n in range(20_000):
        limiter.take(ipaddress.IPv4Address(n), 0.0)
        assert len(limiter) <= 1000
    # a recently seen address keeps its (emptier) bucket
    recent = ipaddress.IPv4Address(19_999)
    for _ in range(4):
        assert limiter.take(recent, 0.0) is None
    assert limiter.take(recent, 0.0) == 1


def test_full_buckets_are_forgotten_first() -> None:
    limiter = RateLimiter(rate=1.0, burst=2, max_tracked=10)
    for n in range(9):
        limiter.take(ipaddress.IPv4Address(n), 0.0)  # full again by t=100
    busy = ipaddress.IPv4Address("10.0.0.1")
    limiter.take(busy, 100.0)
    limiter.take(busy, 100.0)
    limiter.take(ipaddress.IPv4Address(99), 100.0)  # the 11th key: the table is trimmed
    assert len(limiter) == 2
    assert limiter.take(busy, 100.0) == 1, "the busy bucket was dropped instead of the full ones"


def test_rate_zero_is_no_limit() -> None:
    limiter = RateLimiter(rate=0.0, burst=1)
    assert all(limiter.take(client_key("10.0.0.1"), 0.0) is None for _ in range(100))
    assert len(limiter) == 0


NETS = parse_networks


@pytest.mark.parametrize(
    ("host", "allow", "deny", "expected"),
    [
        ("10.1.2.3", [], [], True),
        ("10.1.2.3", ["10.0.0.0/8"], [], True),
        ("192.0.2.1", ["10.0.0.0/8"], [], False),
        ("10.1.2.3", ["10.0.0.0/8"], ["10.1.0.0/16"], False),  # deny wins
        ("10.2.0.1", ["10.0.0.0/8"], ["10.1.0.0/16"], True),
        ("192.0.2.1", [], ["10.0.0.0/8"], True),
        ("::ffff:10.1.2.3", ["10.0.0.0/8"], [], True),  # IPv4-mapped matches IPv4
        ("::ffff:10.1.2.3", [], ["10.0.0.0/8"], False),
        ("2001:db8::1", ["10.0.0.0/8"], [], False),
        ("2001:db8::1", ["2001:db8::/32"], [], True),
        ("::1", [], ["::1"], False),
        (None, [], [], True),  # a unix-socket client: no list holds it
        (None, ["10.0.0.0/8"], [], False),
        (None, [], ["0.0.0.0/0"], True),
    ],
)
def test_allow_and_deny(host: str | None, allow: list[str], deny: list[str], expected: bool) -> None:
    assert allowed(host, NETS(allow), NETS(deny)) is expected
