"""Unit tests for wstrio._sansio.backends.balance: lighttpd's balance rules, sans-I/O."""

from __future__ import annotations

from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wstrio._config import Backend, Route
from wstrio._errors import ConfigError
from wstrio._sansio.backends.balance import (
    ALGORITHMS,
    MAX_CONNECT_ATTEMPTS,
    MAX_RECONNECTS,
    Balancer,
    HostStatistics,
    djb_hash,
    host_hash,
    should_reconnect,
)

if TYPE_CHECKING:
    from collections.abc import Collection


def _reference_djb(data: bytes, h: int = 5381) -> int:
    # An independent spelling of lighttpd's djbhash, with the uint32 wrap as a modulo.
    return reduce(lambda acc, byte: ((acc * 33) ^ byte) % 2**32, data, h)


def _pick(
    b: Balancer,
    now: float = 0.0,
    *,
    path: str = "/",
    authority: str = "h",
    client_ip: str = "",
    exclude: Collection[int] = (),
) -> int | None:
    return b.pick(now, path=path, authority=authority, client_ip=client_ip, exclude=exclude)


# -- hashing -----------------------------------------------------------------


def test_djb_hash_hand_computed_values() -> None:
    assert djb_hash(b"") == 5381
    # 5381 * 33 = 177573 = 0x2B5A5; 0xA5 ^ 0x61 ("a") = 0xC4 -> 0x2B5C4 = 177604
    assert djb_hash(b"a") == 177604
    # 177604 * 33 = 5860932 = 0x596E44; 0x44 ^ 0x62 ("b") = 0x26 -> 0x596E26 = 5860902
    assert djb_hash(b"ab") == 5860902
    # chaining: djb("b", djb("a")) is djb("ab")
    assert djb_hash(b"b", djb_hash(b"a")) == 5860902


def test_djb_hash_wraps_to_32_bits() -> None:
    # 0xFFFFFFFF * 33 = -33 (mod 2**32) = 0xFFFFFFDF; ^ 0 leaves it.
    assert djb_hash(b"\x00", 0xFFFFFFFF) == 0xFFFFFFDF
    long = b"/some/rather/long/path/" * 40
    assert djb_hash(long) == _reference_djb(long)
    assert 0 <= djb_hash(long) <= 0xFFFFFFFF


def test_host_hash_is_djb_of_address_xor_port() -> None:
    assert host_hash("a", 0) == 177604
    assert host_hash("a", 1) == 177605  # 0x2B5C4 ^ 1
    assert host_hash("127.0.0.1", 8080) == _reference_djb(b"127.0.0.1") ^ 8080
    assert host_hash("/run/echo.sock", 0) == _reference_djb(b"/run/echo.sock")


def test_for_route_hashes_resolved_address_socket_path_and_port() -> None:
    route = Route(
        handler="wstunnel",
        path="/ws",
        balance="hash",
        backends=(
            Backend(host="localhost", port=9000),
            Backend(socket=Path("/tmp/echo.sock"), disable_time=3.0),
        ),
    )
    plain = Balancer.for_route(route)
    assert plain.host_hashes == (
        host_hash("localhost", 9000),
        host_hash("/tmp/echo.sock", 0),
    )
    resolved = Balancer.for_route(route, ["127.0.0.1", "ignored"])
    assert resolved.host_hashes == (
        host_hash("127.0.0.1", 9000),
        host_hash("/tmp/echo.sock", 0),
    )
    assert resolved.algorithm == "hash"
    # disable_time comes from each backend
    resolved.mark_failed(1, 10.0)
    assert resolved.statistics(10.0)[1].disabled_until == 13.0


def test_unknown_algorithm_and_length_mismatch_are_rejected() -> None:
    with pytest.raises(ConfigError, match="expected one of"):
        Balancer("random", [1, 2], [1.0, 1.0])
    with pytest.raises(ValueError, match="one disable time per host"):
        Balancer("fair", [1, 2], [1.0])
    assert {"fair", "least-connection", "round-robin", "hash", "sticky"} == ALGORITHMS


# -- fair --------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["fair", "least-connection"])
def test_fair_picks_lowest_load_ties_to_earliest(algorithm: str) -> None:
    b = Balancer(algorithm, [0, 0, 0], [1.0] * 3)
    assert _pick(b) == 0  # all 0: earliest
    b.acquire(0)
    assert _pick(b) == 1  # loads 1,0,0: earliest of the zeros
    b.acquire(1)
    b.acquire(1)
    assert _pick(b) == 2  # loads 1,2,0
    b.acquire(2)
    assert _pick(b) == 0  # loads 1,2,1: tie between 0 and 2 goes to 0
    b.release(0)
    b.release(0)  # never below 0
    assert b.load(0) == 0
    b.acquire(2)
    assert _pick(b) == 0


def test_pick_does_not_change_load() -> None:
    b = Balancer("fair", [0, 0], [1.0, 1.0])
    assert _pick(b) == 0
    assert _pick(b) == 0
    assert (b.load(0), b.load(1)) == (0, 0)


def test_fair_skips_disabled_and_excluded() -> None:
    b = Balancer("fair", [0, 0, 0], [1.0] * 3)
    b.mark_failed(0, 5.0)
    assert _pick(b, 5.0) == 1
    assert _pick(b, 5.0, exclude={1}) == 2
    assert _pick(b, 5.0, exclude={1, 2}) is None
    assert _pick(b, 6.0, exclude={1, 2}) == 0  # disable time over


# -- round robin -------------------------------------------------------------


def test_round_robin_cycles_and_wraps() -> None:
    b = Balancer("round-robin", [0, 0, 0], [1.0] * 3)
    assert [_pick(b) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_round_robin_skips_disabled_host() -> None:
    b = Balancer("round-robin", [0, 0, 0], [1.0] * 3)
    b.mark_failed(1, 0.0)
    assert [_pick(b, 0.5) for _ in range(4)] == [0, 2, 0, 2]
    # host 1 is back at t=1.0; the cursor is on 2, so the order resumes at 0
    assert [_pick(b, 1.0) for _ in range(3)] == [0, 1, 2]


def test_round_robin_wrap_includes_last_used_host() -> None:
    b = Balancer("round-robin", [0, 0, 0], [1.0] * 3)
    assert _pick(b) == 0
    assert _pick(b) == 1
    b.mark_failed(0, 0.0)
    b.mark_failed(2, 0.0)
    # search 2.. finds nothing, the wrap scans 0..1 inclusive: 1 again
    assert _pick(b, 0.1) == 1
    assert _pick(b, 0.1) == 1


def test_round_robin_none_resets_cursor() -> None:
    b = Balancer("round-robin", [0, 0, 0], [1.0] * 3)
    assert _pick(b) == 0
    assert _pick(b) == 1
    for i in range(3):
        b.mark_failed(i, 0.0)
    assert _pick(b, 0.5) is None
    # lighttpd stores -1 as the cursor, so the next round starts at host 0, not 2
    assert _pick(b, 2.0) == 0


def test_single_host_shortcut() -> None:
    b = Balancer("round-robin", [123], [2.0])
    assert _pick(b) == 0
    assert _pick(b) == 0
    b.mark_failed(0, 1.0)
    assert _pick(b, 2.9) is None
    assert _pick(b, 3.0) == 0
    assert _pick(b, 3.0, exclude=[0]) is None
    assert _pick(Balancer("fair", [], []), 0.0) is None


# -- hash and sticky ---------------------------------------------------------


def test_hash_chooses_largest_xor_with_hand_computed_base() -> None:
    # path "" and authority "": base = djb("", djb("", 5381)) = 5381 = 0x1505
    # 0x1505 ^ 0 = 0x1505, ^ 1 = 0x1504, ^ 2 = 0x1507 (largest), ^ 3 = 0x1506
    b = Balancer("hash", [0, 1, 2, 3], [1.0] * 4)
    assert _pick(b, path="", authority="") == 2
    b.mark_failed(2, 0.0)
    assert _pick(b, 0.5, path="", authority="") == 3  # next highest, 0x1506
    # path "/": djb("/") = 177573 ^ 0x2F = 0x2B5A5 ^ 0x2F = 0x2B58A = 177546;
    # authority "" leaves it.  0x2B58A ^ 1 = 0x2B58B beats ^ 0 (0x2B58A),
    # ^ 2 (0x2B588) and ^ 3 (0x2B589).
    assert djb_hash(b"", djb_hash(b"/")) == 177546
    assert _pick(b, 0.5, path="/", authority="") == 1


def test_hash_uses_path_and_authority_not_client() -> None:
    hashes = [host_hash(f"10.0.0.{i}", 80) for i in range(8)]
    b = Balancer("hash", hashes, [1.0] * 8)
    base = djb_hash(b"example.com", djb_hash(b"/chat/room1"))
    expected = max(range(8), key=lambda i: (base ^ hashes[i], i))
    for ip in ("1.2.3.4", "5.6.7.8"):
        assert _pick(b, path="/chat/room1", authority="example.com", client_ip=ip) == expected
    # Swapping path and authority is a different key (order of chaining matters)
    swapped = djb_hash(b"/chat/room1", djb_hash(b"example.com"))
    assert swapped != base


def test_hash_ties_go_to_later_host() -> None:
    b = Balancer("hash", [7, 7, 1], [1.0] * 3)
    # base 5381 = 0x1505: ^7 = 0x1502, ^1 = 0x1504 -> host 2 wins outright
    assert _pick(b, path="", authority="") == 2
    b.mark_failed(2, 0.0)
    # hosts 0 and 1 tie at 0x1502: the later one
    assert _pick(b, 0.0, path="", authority="") == 1


def test_sticky_prefers_highest_falls_back_and_moves_back() -> None:
    # client "a": base = 177604 = 0x2B5C4 (low byte 1100 0100)
    #   ^ 0x04 -> 0x2B5C0, ^ 0x3B -> 0x2B5FF (best), ^ 0x38 -> 0x2B5FC (second)
    b = Balancer("sticky", [0x04, 0x3B, 0x38], [5.0] * 3)
    assert _pick(b, 0.0, client_ip="a", path="/x", authority="y") == 1
    # path and authority do not matter for sticky
    assert _pick(b, 0.0, client_ip="a", path="/other", authority="z") == 1
    b.mark_failed(1, 0.0)
    assert _pick(b, 1.0, client_ip="a") == 2  # next-highest
    b.mark_failed(2, 1.0)
    assert _pick(b, 2.0, client_ip="a") == 0
    assert _pick(b, 5.0, client_ip="a") == 1  # host 1 is back: the client moves back


def test_sticky_differs_by_client() -> None:
    b = Balancer("sticky", [0x04, 0x3B, 0x38], [1.0] * 3)
    # client "": base = 5381 = 0x1505;
    # ^0x04 = 0x1501, ^0x3B = 0x153E (best), ^0x38 = 0x153D
    assert _pick(b, client_ip="") == 1
    # Different clients spread over every host, each by the brute-force rule.
    winners = set()
    for i in range(256):
        ip = f"192.0.2.{i}"
        base = _reference_djb(ip.encode())
        want = max(range(3), key=lambda k: (base ^ b.host_hashes[k], k))
        assert _pick(b, client_ip=ip) == want
        winners.add(want)
    assert winners == {0, 1, 2}


@given(
    hashes=st.lists(st.integers(0, 2**32 - 1), min_size=2, max_size=8),
    removed=st.integers(0, 7),
    keys=st.lists(st.tuples(st.text(max_size=20), st.text(max_size=10)), min_size=1, max_size=30),
)
def test_hash_removing_a_host_moves_only_its_keys(hashes: list[int], removed: int, keys: list[tuple[str, str]]) -> None:
    removed %= len(hashes)
    full = Balancer("hash", hashes, [1.0] * len(hashes))
    rest = Balancer("hash", hashes[:removed] + hashes[removed + 1 :], [1.0] * (len(hashes) - 1))
    disabled = Balancer("hash", hashes, [1.0] * len(hashes))
    disabled.mark_failed(removed, 0.0)
    for path, authority in keys:
        before = full.pick(0.0, path="/" + path, authority=authority, client_ip="")
        assert before is not None
        after = rest.pick(0.0, path="/" + path, authority=authority, client_ip="")
        assert after is not None
        after_old_index = after if after < removed else after + 1
        if before != removed:
            assert after_old_index == before
        # disabling the host behaves as removing it
        assert disabled.pick(0.5, path="/" + path, authority=authority, client_ip="") == after_old_index


@given(
    hashes=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=8),
    path=st.text(max_size=30),
    authority=st.text(max_size=30),
)
def test_hash_matches_brute_force(hashes: list[int], path: str, authority: str) -> None:
    b = Balancer("hash", hashes, [1.0] * len(hashes))
    base = _reference_djb(authority.encode(), _reference_djb(path.encode()))
    want = max(range(len(hashes)), key=lambda i: (base ^ hashes[i], i))
    assert b.pick(0.0, path=path, authority=authority, client_ip="x") == want


# -- disable / enable, counters ----------------------------------------------


def test_disable_and_reenable_by_time() -> None:
    b = Balancer("fair", [0, 0], [2.5, 1.0])
    assert b.is_available(0, 0.0)
    b.mark_failed(0, 10.0)
    assert not b.is_available(0, 10.0)
    assert not b.is_available(0, 12.49)
    assert _pick(b, 12.49) == 1
    assert b.refresh(12.49) == []
    assert b.is_available(0, 12.5)
    assert _pick(b, 12.5) == 0
    assert b.refresh(12.5) == [0]
    assert b.refresh(13.0) == []  # reported once


def test_mark_failed_does_not_shorten_a_later_disable() -> None:
    b = Balancer("fair", [0, 0], [5.0, 1.0])
    b.mark_failed(0, 10.0)
    b.mark_failed(0, 8.0)  # an older failure reported late
    assert b.statistics(14.0)[0].disabled
    assert not b.statistics(15.0)[0].disabled


def test_all_down_returns_none() -> None:
    for algorithm in sorted(ALGORITHMS):
        b = Balancer(algorithm, [1, 2, 3], [1.0] * 3)
        for i in range(3):
            b.mark_failed(i, 0.0)
        assert _pick(b, 0.99, client_ip="c") is None, algorithm
        assert _pick(b, 1.0, client_ip="c") is not None, algorithm


def test_active_procs_zero_makes_host_unavailable() -> None:
    b = Balancer("fair", [0, 0], [1.0, 1.0])
    b.set_active_procs(0, 0)
    assert _pick(b) == 1
    b.set_active_procs(0, 3)
    assert _pick(b) == 0


def test_statistics_counters() -> None:
    b = Balancer("fair", [0, 0], [1.0, 1.0])
    b.acquire(0)
    b.acquire(0)
    b.mark_connected(0)
    b.mark_failed(1, 3.0)
    b.mark_failed(1, 3.5, overloaded=True)
    stats = b.statistics(4.0)
    assert stats[0] == HostStatistics(load=2, disabled=False, disabled_until=0.0, connected=1, died=0, overloaded=0)
    assert stats[1] == HostStatistics(load=0, disabled=True, disabled_until=4.5, connected=0, died=1, overloaded=1)
    assert stats[1].failures == 2
    assert not b.statistics(4.5)[1].disabled


def test_retry_loop_lands_on_live_host() -> None:
    # spec §3.8 observation: round-robin, one host refusing, every request still served.
    b = Balancer("round-robin", [0, 0], [1.0, 1.0])
    refusing = {1}
    served = []
    for request in range(4):
        now = request * 0.1
        reconnects = 0
        while True:
            i = _pick(b, now)
            assert i is not None
            b.acquire(i)
            if i in refusing:
                b.mark_failed(i, now)
                b.release(i)
                assert should_reconnect(reconnects)
                reconnects += 1
                continue
            b.mark_connected(i)
            served.append(i)
            b.release(i)
            break
    assert served == [0, 0, 0, 0]
    assert b.statistics(0.3)[1].died == 1  # disabled after the first refusal, never tried again


def test_retry_budget() -> None:
    assert MAX_RECONNECTS == 5
    assert MAX_CONNECT_ATTEMPTS == 6
    # lighttpd: `if (hctx->reconnects++ < 5) reconnect;` with reconnects starting at 0
    assert [should_reconnect(n) for n in range(7)] == [True] * 5 + [False] * 2
    # connect timeout: `reconnects++ < 1`, same counter
    assert [should_reconnect(n, timed_out=True) for n in range(3)] == [
        True,
        False,
        False,
    ]
