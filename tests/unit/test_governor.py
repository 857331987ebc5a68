"""The rate governor on its own: pace, hard cap, priorities, deadlines and adaptation."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from backends.errors import BackendError, Kind
from service.deadlines import Deadline
from service.governor import Priority, RateGovernor
from service.governor.pacing import (
    DECREASE_FACTOR,
    FLOOR_ABOVE,
    FORGET,
    LEAST,
    MOST,
    SHRINK,
    SHRINK_AFTER,
    START,
    LearnedMargin,
)

# A 0.2 s window keeps these tests quick; the governor scales with the window.
WINDOW = 0.2


async def grant_times(governor: RateGovernor, count: int, priority: Priority = Priority.BATCH) -> list[float]:
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def one() -> None:
        await governor.acquire(priority, Deadline.for_call(None))
        times.append(loop.time())

    await asyncio.gather(*(one() for _ in range(count)))
    return sorted(times)


def most_in_any_window(times: list[float], window: float) -> int:
    return max(sum(1 for t in times if start <= t < start + window) for start in times)


async def test_a_burst_is_paced_and_never_exceeds_the_limit() -> None:
    governor = RateGovernor(10, window=WINDOW)
    times = await grant_times(governor, 30)
    assert most_in_any_window(times, WINDOW) <= 10
    # Never faster than the pace; a loaded machine may only make it slower (bench/ measures throughput).
    assert times[-1] - times[0] >= 29 * governor.spacing * 0.95


async def test_interactive_calls_go_first_up_to_their_share() -> None:
    governor = RateGovernor(10, window=WINDOW, interactive_share=0.5)
    order: list[Priority] = []

    async def one(priority: Priority) -> None:
        await governor.acquire(priority, Deadline.for_call(None))
        order.append(priority)

    batch = [asyncio.create_task(one(Priority.BATCH)) for _ in range(10)]
    await asyncio.sleep(0)
    interactive = [asyncio.create_task(one(Priority.INTERACTIVE)) for _ in range(10)]
    await asyncio.gather(*batch, *interactive)
    # The first batch item was granted before the interactive calls arrived; then interactive calls are
    # preferred until they hold half the window's budget, after which batch items get their turn.
    first_ten = order[:10]
    assert first_ten.count(Priority.INTERACTIVE) >= 5
    assert Priority.BATCH in order[5:12]


async def test_a_call_that_cannot_get_a_slot_in_time_fails_fast() -> None:
    governor = RateGovernor(1, window=1.0)
    await governor.acquire(Priority.INTERACTIVE, Deadline.for_call(None))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BackendError) as caught:
        await governor.acquire(Priority.INTERACTIVE, Deadline.for_call(0.3))
    assert caught.value.kind is Kind.THROTTLED
    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 0.3
    assert loop.time() - started < 0.05
    assert governor.rejections == 1


async def test_a_retry_is_served_before_its_prioritys_first_attempts_with_a_short_deadline() -> None:
    # 20 batch items queue for 2 s of slots; a retry of one that was refused (by the backend's limit,
    # say) comes after them with 0.5 s left. It must not queue behind them again: it would never make it.
    governor = RateGovernor(10, window=WINDOW)
    await governor.acquire(Priority.BATCH, Deadline.for_call(None))
    order: list[str] = []

    async def one(name: str, deadline: Deadline, *, retry: bool = False) -> None:
        await governor.acquire(Priority.BATCH, deadline, retry=retry)
        order.append(name)

    queued = [asyncio.create_task(one(f"first-{n}", Deadline.for_call(None))) for n in range(20)]
    await asyncio.sleep(0)
    await one("retry", Deadline.for_call(2 * governor.spacing), retry=True)
    await asyncio.gather(*queued)
    assert order.index("retry") == 0
    assert order[1:] == [f"first-{n}" for n in range(20)]
    await governor.aclose()


async def test_a_retry_with_the_time_to_queue_queues_behind_its_prioritys_first_attempts() -> None:
    # Spread out, a crowded account's retries do not all meet the same full second again.
    governor = RateGovernor(10, window=WINDOW)
    await governor.acquire(Priority.BATCH, Deadline.for_call(None))
    order: list[str] = []

    async def one(name: str, *, retry: bool = False) -> None:
        await governor.acquire(Priority.BATCH, Deadline.for_call(None), retry=retry)
        order.append(name)

    queued = [asyncio.create_task(one(f"first-{n}")) for n in range(3)]
    await asyncio.sleep(0)
    await asyncio.gather(one("retry", retry=True), *queued)
    assert order == ["first-0", "first-1", "first-2", "retry"]
    await governor.aclose()


async def test_a_retry_still_waits_for_interactive_calls_ahead_of_it() -> None:
    governor = RateGovernor(10, window=WINDOW)
    await governor.acquire(Priority.BATCH, Deadline.for_call(None))
    interactive = [
        asyncio.create_task(governor.acquire(Priority.INTERACTIVE, Deadline.for_call(None))) for _ in range(4)
    ]
    await asyncio.sleep(0)
    with pytest.raises(BackendError) as caught:
        await governor.acquire(Priority.BATCH, Deadline.for_call(2 * governor.spacing), retry=True)
    assert caught.value.kind is Kind.THROTTLED
    await asyncio.gather(*interactive)
    await governor.aclose()


async def test_a_cancelled_waiter_spends_no_slot() -> None:
    governor = RateGovernor(5, window=WINDOW)
    await governor.acquire(Priority.BATCH, Deadline.for_call(None))
    waiter = asyncio.create_task(governor.acquire(Priority.BATCH, Deadline.for_call(None)))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await governor.acquire(Priority.BATCH, Deadline.for_call(None))
    assert governor.grants == 2
    await governor.aclose()


async def test_a_lone_rate_limit_costs_only_the_margin_and_one_it_cannot_explain_slows_the_pace() -> None:
    governor = RateGovernor(10, window=WINDOW)
    sent_at = asyncio.get_running_loop().time()
    governor.upstream_rate_limited(sent_at)
    governor.upstream_rate_limited(sent_at)  # the same window: one lesson only
    # The margin rose a little, to FLOOR_ABOVE over the one the request was sent under; the pace held.
    assert governor.period == pytest.approx((1 + START + FLOOR_ABOVE) * WINDOW)
    assert governor.rate == 10
    await asyncio.sleep(governor.period * 1.1)
    # Refused again under the margin that refusal taught: the margin is not what falls short.
    governor.upstream_rate_limited(asyncio.get_running_loop().time())
    assert governor.rate == pytest.approx(10 * DECREASE_FACTOR)
    assert governor.period == pytest.approx((1 + START + 2 * FLOOR_ABOVE) * WINDOW)
    await asyncio.sleep(governor.period * 2.1)
    await grant_times(governor, 3)
    assert governor.rate > 10 * DECREASE_FACTOR
    await governor.aclose()


def test_the_learned_margin_shrinks_while_quiet_down_to_a_floor_that_a_rate_limit_raises() -> None:
    qps = 100
    margin = LearnedMargin(qps=qps)
    assert margin.value == START
    shrink_after = round(SHRINK_AFTER * qps)
    clock = 0.0

    def grant(count: int) -> None:
        nonlocal clock
        for _ in range(count):
            clock += 1 / qps
            margin.granted(clock)

    grant(shrink_after)  # half a second's worth of the budget, none refused
    assert margin.value == pytest.approx(START - SHRINK)
    sent_under_start_less_one_shrink = clock
    # A quiet path gets down to LEAST within seconds of the budget.
    grant(round((START - LEAST) / SHRINK) * shrink_after)
    assert margin.value == LEAST
    # A request sent back then is refused now: the floor rises over the margin it was sent under (not
    # over LEAST, the margin when its answer came back), and stays however quiet the path is after.
    assert not margin.rate_limited(sent_under_start_less_one_shrink, clock)  # the margin's to answer
    raised = START - SHRINK + FLOOR_ABOVE
    assert margin.value == pytest.approx(raised)
    grant(20 * shrink_after)
    assert margin.value == pytest.approx(raised - 20 * FORGET)
    # The floor sinks back, a shrink per minute's worth of the budget: a path that calmed is trusted again.
    grant(round((raised - LEAST) / FORGET) * shrink_after)
    assert margin.value == LEAST
    # Refused under less than the margin the last refusal taught: the floor had sunk, the margin answers.
    assert not margin.rate_limited(clock, clock)
    # Refused again under what that one taught: the margin cannot explain it, the pace must drop too.
    assert all(margin.rate_limited(clock, clock) for _ in range(20))
    assert margin.value == MOST


def test_a_fast_pace_grants_each_due_slot_without_spinning_on_uvloops_millisecond_clock() -> None:
    # uvloop's clock moves in whole milliseconds: a sleep shorter than that wakes in the same tick.
    async def grants_and_sleeps() -> tuple[int, int]:
        sleeps = 0

        async def counted(seconds: float) -> None:
            nonlocal sleeps
            sleeps += 1
            await asyncio.sleep(seconds)

        governor = RateGovernor(100_000, sleep=counted)
        await asyncio.gather(
            *(governor.acquire(Priority.BATCH, Deadline.for_call(None)) for _ in range(2000))
        )
        await governor.aclose()
        return governor.grants, sleeps

    grants, sleeps = uvloop.run(grants_and_sleeps())
    assert grants == 2000
    # A sleep per clock tick at most (2,000 slots 10 µs apart span 20 ms), never one per grant or more.
    assert sleeps <= 100


def test_a_refusal_under_the_taught_margin_is_unexplained_though_the_floor_sank_a_little_since() -> None:
    qps = 100
    margin = LearnedMargin(qps=qps)
    clock = 0.0
    assert not margin.rate_limited(clock, clock)  # the first lesson: the margin's to answer
    for _ in range(20 * round(SHRINK_AFTER * qps)):  # 15 s of full budget: the floor sinks 20 FORGETs
        clock += 1 / qps
        margin.granted(clock)
    assert margin.value < margin.taught
    # Sent under the margin that lesson taught, give or take its slow sinking: someone else spends the
    # account, and the pace must come down too.
    assert margin.rate_limited(clock, clock)
