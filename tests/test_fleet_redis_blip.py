"""A Redis that drops out for a moment, against a real redis-server: the callers queued on the fallback
share while it was away go back to the fleet's schedule as soon as Redis answers, not once the share's
start comes (which waits out the others' silence and horizon, over a second)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from service.deadlines import Deadline
from service.governor import Priority
from testbed.redis_server import RedisServer
from tests.support.fleet_governors import Factory, grant_times, replicas

__all__ = ["replicas"]  # the fixture, shared with the fleet governor's tests

WAITERS = 30


async def until(condition: Callable[[], bool]) -> None:
    """Polls `condition` every 10 ms for up to 5 s: the governors change state in tasks of their own,
    with nothing to wait on."""
    async with asyncio.timeout(5):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


async def test_callers_queued_on_the_share_go_back_to_the_schedule_as_soon_as_redis_answers(
    replicas: Factory, redis: RedisServer
) -> None:
    governors = [replicas(), replicas()]
    await grant_times(governors, 4)
    await asyncio.sleep(0.6)  # a heartbeat each: both know of two replicas
    loop = asyncio.get_running_loop()
    granted: list[float] = []

    async def one(index: int) -> None:
        await governors[index % len(governors)].acquire(Priority.BATCH, Deadline.for_call(None))
        granted.append(loop.time())

    redis.stop()
    waiters = [asyncio.create_task(one(i)) for i in range(WAITERS)]
    await until(lambda: all(g.fallback for g in governors))
    redis.start()  # empty: the schedule starts afresh
    await until(lambda: not any(g.fallback for g in governors))
    back = loop.time()
    await until(lambda: any(t >= back for t in granted))
    # Back within a heartbeat of the restart, before the share would have granted anything: the queued
    # callers' first slot comes from the schedule at once (it came once the share started, ~0.7 s on).
    assert min(t for t in granted if t >= back) - back < 0.3
    await asyncio.gather(*waiters)
