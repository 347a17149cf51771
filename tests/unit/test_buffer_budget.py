"""The server-wide buffer budget (wstrio._io.streams.budget), without I/O."""

from __future__ import annotations

import logging

import pytest

from wstrio._io.streams import budget as budget_module
from wstrio._io.streams.budget import READ_SIZE, SMALL_READ, TRIM_AFTER, BufferBudget


def test_reads_shrink_at_the_limit_and_grow_again_below_half(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "wstrio.server")
    budget = BufferBudget(1000)
    budget.hold(600)
    assert budget.read_size == READ_SIZE
    budget.hold(400)  # 1000: at the limit
    assert budget.read_size == SMALL_READ
    budget.hold(300)
    budget.release(600)  # 700: under the limit, not under half of it
    assert budget.read_size == SMALL_READ
    budget.release(300)  # 400
    assert budget.read_size == READ_SIZE
    budget.release(400)
    assert budget.held == 0
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(messages) == 2, messages  # one per edge, not one per hold
    assert messages[0][0] == "WARNING"
    assert "max-buffer-memory (1000 bytes) reached" in messages[0][1]
    assert messages[1][0] == "INFO"


def test_no_limit_counts_but_never_shrinks_reads() -> None:
    budget = BufferBudget(0)
    budget.hold(10 * 2**30)
    assert budget.read_size == READ_SIZE
    assert budget.peak == 10 * 2**30


def test_memory_is_given_back_once_a_large_backlog_has_drained(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(budget_module, "_malloc_trim", lambda pad: calls.append(pad) or 1)
    budget = BufferBudget(0)
    budget.hold(TRIM_AFTER // 2)
    budget.release(TRIM_AFTER // 2)
    assert not budget.trim(), "a small backlog is not worth a malloc_trim"
    budget.hold(2 * TRIM_AFTER)
    assert not budget.trim(), "not while it is still held"
    budget.release(TRIM_AFTER)
    assert not budget.trim(), "not while more than a quarter of the peak is held"
    budget.release(TRIM_AFTER)
    assert budget.trim()
    assert calls == [0]
    assert budget.trims == 1
    assert budget.peak == 0
    assert not budget.trim(), "once per backlog"
