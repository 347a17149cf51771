"""The fuzzers' mutator is deterministic (a seed and an index reproduce a case) and does mutate."""

from __future__ import annotations

import pytest

from tests.fuzz.mutator import Mutator, fuzz_cases, fuzz_seed

HEAD = b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"


def test_the_same_seed_gives_the_same_cases() -> None:
    assert [Mutator(7).mutate(HEAD) for _ in range(3)] == [Mutator(7).mutate(HEAD) for _ in range(3)]
    one, other = Mutator(7), Mutator(8)
    assert [one.mutate(HEAD) for _ in range(20)] != [other.mutate(HEAD) for _ in range(20)]


def test_most_cases_differ_from_the_input() -> None:
    m = Mutator(1)
    changed = sum(m.mutate(HEAD) != HEAD for _ in range(1000))
    assert changed > 900


def test_insert_line_puts_a_header_at_a_line_start() -> None:
    m = Mutator(3)
    for _ in range(50):
        out = m.insert_line(HEAD)
        assert out.startswith(b"GET /index.html HTTP/1.1\r\n")
        assert len(out) > len(HEAD)


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSTRIO_FUZZ_CASES", "12")
    monkeypatch.setenv("WSTRIO_FUZZ_SEED", "99")
    assert fuzz_cases(3000) == 12
    assert fuzz_seed() == 99
    monkeypatch.delenv("WSTRIO_FUZZ_CASES")
    assert fuzz_cases(3000) == 3000
