"""The intake's unary calls: they take room like items, wait within their deadline, and within a caller
go first while they hold less than their interactive share of its room."""

from __future__ import annotations

import asyncio

from service.governor import Priority
from service.intake import Intake


async def test_within_a_caller_unary_calls_go_first_while_under_their_share() -> None:
    intake = Intake(lambda: 4, interactive_share=0.5)
    for caller in ("a", "a", "b", "b"):
        await intake.enter(caller)  # a full intake: both callers at their part
    entered: list[Priority] = []

    async def enter(priority: Priority) -> None:
        await intake.enter("a", priority)
        entered.append(priority)

    waiters = [asyncio.create_task(enter(Priority.BATCH)) for _ in range(3)]
    waiters += [asyncio.create_task(enter(Priority.INTERACTIVE)) for _ in range(3)]
    await asyncio.sleep(0)
    for _ in range(2):
        intake.leave("a")  # one of its stream items answered
        await asyncio.sleep(0)
    # Unary first (a held none), then an item: a's one unary call is half of its room already.
    assert entered == [Priority.INTERACTIVE, Priority.BATCH]
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)


async def test_a_unary_call_leaving_gives_its_room_back() -> None:
    intake = Intake(lambda: 1)
    await intake.enter("a", Priority.INTERACTIVE)
    assert not await intake.enter_within("b", Priority.BATCH, 0.0)
    waiting = asyncio.create_task(intake.enter_within("b", Priority.BATCH, 60.0))
    await asyncio.sleep(0)
    intake.leave("a", Priority.INTERACTIVE)
    assert await waiting
    assert intake.held == 1


async def test_no_room_within_the_time_is_false_and_holds_nothing() -> None:
    intake = Intake(lambda: 1)
    await intake.enter("a")
    # Below zero seconds (no time left to finish) gives up at once, without waiting.
    assert not await intake.enter_within("a", Priority.INTERACTIVE, -1.0)
    assert intake.held == 1
