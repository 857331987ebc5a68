"""The fleet governor against a real redis-server: replicas in one process, each with its own client."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import pytest

from service.deadlines import Deadline
from service.governor import FleetGovernor, Priority
from service.governor.connect import redis_client
from service.governor.fleet import fleet_parameters
from service.governor.pacing import DECREASE_FACTOR, FLOOR_ABOVE, SHRINK, SHRINK_AFTER, START
from service.governor.schedule import Heartbeat, Schedule
from testbed.redis_server import RedisServer
from tests.support.eventually import eventually
from tests.support.fleet_governors import QPS, Factory, grant_times, replicas

__all__ = ["replicas"]  # the fixture, shared with the other fleet governor tests


def most_in_any_second(times: list[float]) -> int:
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


async def test_replicas_share_one_even_pace_whatever_their_clocks(replicas: Factory) -> None:
    # One replica's clock 5 s ahead: only Redis's clock places slots, so it changes nothing.
    governors = [replicas(), replicas(clock_offset=5.0)]
    granted = await grant_times(governors, 3 * QPS)
    times = [t for t, _ in granted]
    assert most_in_any_second(times) <= QPS
    # Under the suite's load a few late slots are dropped (STALE_SHARE_OF_MARGIN); the pace itself is 98 %.
    assert (len(times) - 1) / (times[-1] - times[0]) >= 0.85 * QPS
    assert all(sum(1 for _, who in granted if who == i) >= QPS for i in (0, 1))
    assert [g.replicas for g in governors] == [2, 2]


async def test_redis_down_falls_back_to_the_share_and_rejoins_within_two_seconds(
    replicas: Factory, redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    governors = [replicas(), replicas()]
    await grant_times(governors, 4)
    await eventually(lambda: [g.replicas for g in governors] == [2, 2])  # a heartbeat each
    redis.stop()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.WARNING, logger="service.governor.fleet"):
        await grant_times(governors, 6)
        # A bounded wait, not a failure: each replica falls back to half the budget.
        assert loop.time() - started < 2.0
        assert [g.fallback for g in governors] == [True, True]
        assert [g.rate for g in governors] == [QPS / 2, QPS / 2]
        redis.start()  # empty: the schedule starts afresh
        await eventually(lambda: not any(g.fallback for g in governors), within=2.0)
        await grant_times(governors, 4)
    lines = [r.getMessage() for r in caplog.records]
    assert sum("Redis unreachable" in line for line in lines) == 2
    assert sum("back on the fleet's schedule" in line for line in lines) == 2
    assert all(str(redis.port) not in line for line in lines)


async def test_a_rate_limit_the_margin_cannot_explain_slows_the_whole_fleet_once_and_gently(
    replicas: Factory,
) -> None:
    first, second = replicas(), replicas()
    await grant_times([first, second], 2)
    loop = asyncio.get_running_loop()
    period = first.period
    first.upstream_rate_limited(loop.time())  # the margin's to answer: it rises, the pace holds
    await eventually(lambda: first.period > period)
    assert (first.rate, second.rate) == (QPS, QPS)
    await asyncio.sleep(first.period * 1.1)
    await grant_times([first, second], 2)  # both replicas hear the raised margin
    sent_at = loop.time()
    first.upstream_rate_limited(sent_at)
    second.upstream_rate_limited(sent_at)  # the same period: the fleet slows down once
    await eventually(lambda: max(first.rate, second.rate) < QPS)  # the second learns at its next heartbeat
    assert first.rate == pytest.approx(QPS * DECREASE_FACTOR, abs=0.01)
    assert second.rate == pytest.approx(QPS * DECREASE_FACTOR, abs=0.01)


async def test_a_rate_limit_reports_the_margin_its_slot_was_spaced_under_not_the_one_shrunk_since(
    replicas: Factory,
) -> None:
    governor = replicas()
    # SHRINK_AFTER's worth of slots: the reservation of the last of them shrinks the margin as it places
    # them, spaced under the margin before.
    granted = await grant_times([governor], math.ceil(SHRINK_AFTER * QPS))
    assert governor.period == pytest.approx(1 + START - SHRINK)
    governor.upstream_rate_limited(granted[-1][0])
    # Taught FLOOR_ABOVE over START, the margin the refused request was sent under.
    await eventually(lambda: governor.period > 1 + START - SHRINK)
    assert governor.period == pytest.approx(1 + START + FLOOR_ABOVE)


async def test_a_caller_share_is_one_budget_across_replicas(replicas: Factory) -> None:
    shares = [replicas().share(0.5, "caller:reports"), replicas().share(0.5, "caller:reports")]
    try:
        times = [t for t, _ in await grant_times(shares, QPS)]
        assert most_in_any_second(times) <= QPS // 2
    finally:
        for share in shares:
            await share.aclose()


async def test_a_retry_takes_the_next_slot_of_the_fleet_before_the_items_queued_on_this_replica(
    replicas: Factory,
) -> None:
    governor = replicas()
    await grant_times([governor], 1)
    queued = [
        asyncio.create_task(governor.acquire(Priority.BATCH, Deadline.for_call(None))) for _ in range(QPS)
    ]
    await asyncio.sleep(0)
    try:
        # A second of slots is queued; the retry has a quarter of it, and is served first.
        await governor.acquire(Priority.BATCH, Deadline.for_call(0.25), retry=True)
        assert sum(task.done() for task in queued) <= 1
    finally:
        for task in queued:
            task.cancel()


class CancellationSwallowingSchedule(Schedule):
    """A heartbeat that swallows a cancellation once, as redis-py can when one lands mid-command."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.beating = asyncio.Event()
        self.swallowed = False

    async def heartbeat(
        self, replica: str, *, sent_under: float | None = None, not_before: float = 0.0
    ) -> Heartbeat:
        if not self.swallowed:
            self.beating.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.swallowed = True
        return await super().heartbeat(replica, sent_under=sent_under, not_before=not_before)


async def test_closing_ends_the_heartbeats_even_when_a_redis_call_swallows_their_cancellation(
    redis: RedisServer,
) -> None:
    client = redis_client(redis.url)
    schedule = CancellationSwallowingSchedule(client, "budget", fleet_parameters(QPS, 0.5))
    governor = FleetGovernor(schedule, name="tencent", on_close=client.aclose)
    governor.start()
    await schedule.beating.wait()
    closing = asyncio.create_task(governor.aclose())
    await asyncio.wait({closing}, timeout=5)
    assert closing.done(), "the heartbeats went on after their cancellation was swallowed"
    assert schedule.swallowed
