"""The "first problem wins" helper: the first report is kept, every report stops the group."""

from __future__ import annotations

import trio

from wstrio._io.first import FirstProblem


async def test_the_first_problem_is_kept_and_the_group_is_cancelled() -> None:
    first: FirstProblem[str] = FirstProblem()

    async def fails(name: str, delay: float) -> None:
        await trio.sleep(delay)
        first.report(name)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        first.attach(nursery.cancel_scope)
        nursery.start_soon(fails, "early", 0)
        nursery.start_soon(fails, "late", 0.001)
        nursery.start_soon(trio.sleep_forever)
    assert first.problem == "early"
    assert nursery.cancel_scope.cancelled_caught


async def test_a_report_before_the_scope_is_attached_cancels_it_when_attached() -> None:
    first: FirstProblem[int] = FirstProblem()
    first.report(1)
    first.report(2)
    with trio.CancelScope() as scope:
        first.attach(scope)
        await trio.sleep_forever()
    assert scope.cancelled_caught
    assert first.problem == 1


async def test_stop_ends_the_group_without_a_problem() -> None:
    first: FirstProblem[str] = FirstProblem()
    with trio.CancelScope() as scope:
        first.attach(scope)
        first.stop()
        await trio.sleep_forever()
    assert scope.cancelled_caught
    assert first.problem is None
