"""The local backend's fair budget: round robin between callers, FIFO within one, bounded waits."""

from __future__ import annotations

import asyncio

import pytest

from backends.local.admission import FairBudget, Grant, NoRoom


async def test_grants_alternate_between_callers_and_keep_each_callers_order() -> None:
    budget = FairBudget(1)
    held = await budget.acquire("flood", 1, timeout=1)
    order: list[str] = []

    async def take(caller: str, label: str) -> None:
        grant = await budget.acquire(caller, 1, timeout=5)
        order.append(label)
        await asyncio.sleep(0)
        grant.release()

    tasks = [asyncio.create_task(take("flood", f"flood-{i}")) for i in range(4)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(take("canary", "canary")))
    await asyncio.sleep(0)
    held.release()
    await asyncio.gather(*tasks)
    # The canary arrived behind four of the flood's requests and is served second, not fifth.
    assert order == ["flood-0", "canary", "flood-1", "flood-2", "flood-3"]
    assert (budget.in_use, budget.waiting) == (0, 0)


async def test_an_amount_over_the_whole_capacity_is_refused_at_once() -> None:
    budget = FairBudget(100)
    with pytest.raises(NoRoom) as caught:
        await budget.acquire("a", 101, timeout=10)
    assert caught.value.ever is False


async def test_a_wait_ends_at_its_timeout_and_leaves_nothing_behind() -> None:
    budget = FairBudget(100)
    held = await budget.acquire("a", 80, timeout=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(NoRoom) as caught:
        await budget.acquire("b", 30, timeout=0.1)
    assert caught.value.ever is True
    assert 0.09 < loop.time() - started < 0.5
    assert (budget.in_use, budget.waiting) == (80, 0)
    held.release()
    held.release()  # idempotent
    assert budget.in_use == 0


async def test_a_large_request_at_the_head_is_not_overtaken_by_small_ones() -> None:
    budget = FairBudget(100)
    held = await budget.acquire("a", 60, timeout=1)
    large = asyncio.create_task(budget.acquire("b", 90, timeout=5))
    await asyncio.sleep(0)
    small = asyncio.create_task(budget.acquire("c", 20, timeout=5))
    await asyncio.sleep(0.01)
    assert not small.done()  # it would fit, but the large one came first
    held.release()
    grant: Grant = await large
    assert not small.done()
    grant.release()
    (await small).release()
    assert budget.in_use == 0


async def test_a_cancelled_waiter_gives_its_place_to_the_next() -> None:
    budget = FairBudget(1)
    held = await budget.acquire("a", 1, timeout=1)
    first = asyncio.create_task(budget.acquire("b", 1, timeout=5))
    second = asyncio.create_task(budget.acquire("c", 1, timeout=5))
    await asyncio.sleep(0)
    first.cancel()
    held.release()
    (await second).release()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert (budget.in_use, budget.waiting) == (0, 0)
