"""Unit tests for wstrio._sansio.backends.pool: choosing a process, pool policy and restart back-off, sans-I/O."""

from __future__ import annotations

import pytest

from wstrio._config import Backend
from wstrio._sansio.backends.pool import PoolPolicy, RestartBackoff, pick_process

# -- processes within a host -------------------------------------------------


def test_pick_process_rule() -> None:
    assert pick_process([], []) is None
    assert pick_process([0, 0], [False, False]) is None
    assert pick_process([3, 1, 1], [True, True, True]) == 1  # strictly lower; tie keeps the first
    assert pick_process([3, 1, 0], [True, True, False]) == 1  # not running is skipped
    assert pick_process([0, 0, 0], [False, True, True]) == 1  # first running, newest first
    assert pick_process([2, 5, 1], [True, True, True]) == 2  # compared with the best so far
    with pytest.raises(ValueError, match="shorter"):
        pick_process([0, 1], [True])


# -- pool policy -------------------------------------------------------------


def _policy(**kw: float) -> PoolPolicy:
    args: dict[str, float] = {
        "min_procs": 1,
        "max_procs": 4,
        "max_load_per_proc": 1,
        "idle_timeout": 60.0,
    }
    args.update(kw)
    return PoolPolicy(
        min_procs=int(args["min_procs"]),
        max_procs=int(args["max_procs"]),
        max_load_per_proc=int(args["max_load_per_proc"]),
        idle_timeout=args["idle_timeout"],
    )


def test_should_spawn_when_every_process_is_overloaded() -> None:
    p = _policy()
    assert not p.should_spawn(10.0, [2, 1])  # one is at the limit, not above
    assert p.should_spawn(10.0, [2, 2])
    assert not p.should_spawn(10.5, [2, 2, 2])  # one spawn per second
    assert p.should_spawn(11.0, [2, 2, 2])
    assert not p.should_spawn(20.0, [9, 9, 9, 9])  # at max_procs
    assert not p.should_spawn(30.0, [])  # an empty pool grows on demand, not here


def test_should_spawn_never_when_not_adaptive() -> None:
    p = _policy(min_procs=4, max_procs=4)
    assert not p.adaptive
    assert not p.should_spawn(0.0, [5, 5, 5])
    assert p.idle_to_stop(1000.0, [0] * 5, [0.0] * 5) is None


def test_min_procs_clamped_and_on_demand() -> None:
    p = _policy(min_procs=8, max_procs=2)
    assert p.min_procs == 2
    assert not p.adaptive
    q = _policy(min_procs=0, max_procs=2)
    assert q.spawn_on_demand(0)
    assert not q.spawn_on_demand(1)
    assert not p.spawn_on_demand(0)


def test_from_backend() -> None:
    p = PoolPolicy.from_backend(
        Backend(
            bin_path=("/bin/echo",),
            min_procs=1,
            max_procs=3,
            max_load_per_proc=2,
            idle_timeout=5.0,
        )
    )
    assert (p.min_procs, p.max_procs, p.max_load_per_proc, p.idle_timeout) == (
        1,
        3,
        2,
        5.0,
    )


def test_idle_to_stop() -> None:
    p = _policy(min_procs=1, max_procs=4, idle_timeout=60.0)
    # newest first; index 0 used recently, 1 busy, 2 idle for 100 s
    assert p.idle_to_stop(100.0, [0, 1, 0], [90.0, 0.0, 0.0]) == 2
    assert p.idle_to_stop(100.5, [0, 1, 0, 0], [0.0, 0.0, 0.0, 0.0]) is None  # one per second
    assert p.idle_to_stop(101.0, [0, 0], [0.0, 0.0]) == 0  # newest idle one first


def test_idle_to_stop_boundaries() -> None:
    p = _policy(min_procs=2, max_procs=4, idle_timeout=60.0)
    assert p.idle_to_stop(100.0, [0, 0], [0.0, 0.0]) is None  # not above min_procs
    q = _policy(min_procs=1, max_procs=4, idle_timeout=60.0)
    assert q.idle_to_stop(100.0, [0, 0], [40.0, 40.0]) is None  # idle exactly 60 s: kept
    assert q.idle_to_stop(100.0, [0, 0], [39.9, 40.0]) == 0
    r = _policy(min_procs=1, max_procs=4, idle_timeout=60.0)
    assert r.idle_to_stop(100.0, [0, 0], [0.0, 0.0], [False, True]) == 1  # dead one skipped


# -- restart back-off --------------------------------------------------------


def test_backoff_sequence_for_a_crashing_program() -> None:
    b = RestartBackoff()
    delays = []
    now = 0.0
    b.started(now)
    for _ in range(10):
        now += 1.0  # crashes one second after each start
        d = b.next_delay(now)
        delays.append(d)
        now += d
        b.started(now)
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert b.streak == 10


def test_backoff_resets_after_healthy_run() -> None:
    b = RestartBackoff()
    b.started(0.0)
    assert b.next_delay(1.0) == 0.0
    b.started(1.0)
    assert b.next_delay(2.0) == 0.5
    b.started(2.5)
    assert b.next_delay(3.0) == 1.0
    b.started(4.0)
    assert b.next_delay(63.9) == 2.0  # 59.9 s is not healthy enough
    b.started(65.9)
    assert b.next_delay(125.9) == 0.0  # ran 60 s: a new streak
    assert b.streak == 1


def test_backoff_without_started_assumes_restart_after_delay() -> None:
    b = RestartBackoff()
    assert b.next_delay(10.0) == 0.0  # first crash ever
    assert b.next_delay(11.0) == 0.5
    assert b.next_delay(12.0) == 1.0  # restarted at 11.5, crashed 0.5 s later
    assert b.next_delay(73.0) == 0.0  # restarted at 13.0, ran 60 s


def test_backoff_as_a_supervisor_loop_uses_it() -> None:
    # Only next_delay() per exit, as wstrio/_io/backends/pool.py calls it: a program
    # that dies 0.1 s after every restart backs off, then a long run resets it.
    b = RestartBackoff()
    now = 0.1
    delays = []
    for _ in range(9):
        d = b.next_delay(now)
        delays.append(d)
        now += d + 0.1
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert b.next_delay(now + 120.0) == 0.0
