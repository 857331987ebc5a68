"""The intake on its own: its room follows the limit, and freed room goes to the caller holding least."""

from __future__ import annotations

import asyncio

import pytest

from service.intake import INTAKE_HORIZON, Intake, intake_limit


def test_the_limit_is_what_the_pace_keeps_busy_plus_a_horizon_waiting() -> None:
    assert intake_limit(100.0, 0.8) == round(100 * (0.8 + INTAKE_HORIZON))
    assert intake_limit(0.1, 0.0) == 1


async def test_freed_room_goes_to_the_waiting_caller_holding_the_fewest_items() -> None:
    intake = Intake(lambda: 4)
    for _ in range(4):
        await intake.enter("many-streams")
    entered: list[str] = []

    async def enter(caller: str) -> None:
        await intake.enter(caller)
        entered.append(caller)

    waiters = [asyncio.create_task(enter("many-streams")) for _ in range(6)]
    waiters.append(asyncio.create_task(enter("one-stream")))
    await asyncio.sleep(0)
    for _ in range(3):
        intake.leave("many-streams")
        await asyncio.sleep(0)
    # The one-stream caller came last but held nothing: it is served first.
    assert entered == ["one-stream", "many-streams", "many-streams"]
    assert intake.held == 4
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)


async def test_room_given_to_a_cancelled_waiter_goes_on_to_the_next() -> None:
    intake = Intake(lambda: 1)
    await intake.enter("a")
    first = asyncio.create_task(intake.enter("b"))
    second = asyncio.create_task(intake.enter("c"))
    await asyncio.sleep(0)
    intake.leave("a")  # room for "b", which is cancelled before it runs
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1.0)
    assert intake.held == 1


async def test_a_limit_that_grows_lets_more_in_at_the_next_leave() -> None:
    limit = [1]
    intake = Intake(lambda: limit[0])
    await intake.enter("a")
    waiters = [asyncio.create_task(intake.enter("a")) for _ in range(3)]
    await asyncio.sleep(0)
    limit[0] = 3
    intake.leave("a")
    await asyncio.wait_for(asyncio.gather(*waiters), 1.0)
    assert intake.held == 3


async def test_a_caller_busy_on_other_replicas_weighs_less_here() -> None:
    # Caller "spread" has batch items on two replicas (weight 1/2 here), "local" on this one only.
    intake = Intake(lambda: 3, lambda caller: 0.5 if caller == "spread" else 1.0)
    others = ("o1", "o2", "o3")  # three more callers, so neither is under its part and enters at once
    for other in others:
        await intake.enter(other)
    entered: list[str] = []

    async def enter(caller: str) -> None:
        await intake.enter(caller)
        entered.append(caller)

    waiters = [asyncio.create_task(enter(caller)) for caller in ("spread", "local") * 3]
    await asyncio.sleep(0)
    for other in others:
        intake.leave(other)
        await asyncio.sleep(0)
    # By items held over weight: both hold none (the first asked goes first), then local, as 1/1 < 1/0.5.
    assert entered == ["spread", "local", "local"]
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)


async def test_a_caller_under_its_part_enters_even_when_the_intake_is_full() -> None:
    intake = Intake(lambda: 10)
    for _ in range(10):
        await intake.enter("ten-streams")
    # Its part is half of ten: it enters at once while it stays under that part.
    for _ in range(4):
        await asyncio.wait_for(intake.enter("one-stream"), 1.0)
    fifth = asyncio.create_task(intake.enter("one-stream"))
    await asyncio.sleep(0)
    assert not fifth.done()
    assert intake.held == 14
    fifth.cancel()
    await asyncio.gather(fifth, return_exceptions=True)
