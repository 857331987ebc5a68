"""Fleet budgets at the edges of their life (issue 23): replicas that start while Redis is unreachable,
and callers' shares that go idle."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backends.errors import BackendError, Kind
from emulator import ImsEmulator
from service.deadlines import Deadline
from service.governor import FleetGovernor, Priority
from service.governor import fleet as fleet_module
from service.governor.connect import redis_client
from service.governor.fleet import fleet_parameters
from service.governor.schedule import Schedule
from testbed.processes import free_port
from testbed.redis_server import RedisServer
from tests.support.budget import within_the_learning_allowance
from tests.support.limited_replicas import BUDGET, Tally, limited, replica, stream, tokens_file

__all__ = ["limited", "tokens_file"]

QPS = 20


@contextlib.asynccontextmanager
async def governor_on(url: str, **options: int | float | None) -> AsyncIterator[FleetGovernor]:
    client = redis_client(url)
    governor = FleetGovernor(
        Schedule(client, "budget", fleet_parameters(QPS, 0.5)),
        name="tencent",
        on_close=client.aclose,
        **options,  # type: ignore[arg-type]
    )
    try:
        yield governor
    finally:
        await governor.aclose()


def nowhere() -> str:
    """A Redis URL nothing listens on."""
    return f"redis://127.0.0.1:{free_port()}/0"


async def test_a_replica_that_never_reached_redis_spends_the_expected_share() -> None:
    async with governor_on(nowhere(), expected_replicas=4) as governor:
        await governor.acquire(Priority.BATCH, Deadline.for_call(5.0))
        assert governor.fallback
        assert governor.rate == QPS // 4


async def test_a_replica_that_never_reached_redis_without_an_expected_count_grants_nothing_for_a_while() -> (
    None
):
    async with governor_on(nowhere()) as governor:
        with pytest.raises(BackendError) as refused:
            # Long enough to learn Redis is unreachable, far shorter than the grace period.
            await governor.acquire(Priority.BATCH, Deadline.for_call(3.0))
    assert refused.value.kind is Kind.THROTTLED
    assert refused.value.retry_after is not None
    assert refused.value.retry_after > 20


@pytest.mark.system
async def test_two_replicas_started_while_redis_is_unreachable_keep_to_the_budget(
    limited: ImsEmulator, tokens_file: Path
) -> None:
    settings = {"MODERATION_REDIS_URL": nowhere(), "MODERATION_FLEET_EXPECTED_REPLICAS": "2"}
    async with (
        replica(limited, tokens_file, **settings) as first,
        replica(limited, tokens_file, **settings) as second,
    ):
        limited.reset_stats()
        tallies = [Tally(), Tally()]
        await asyncio.gather(
            stream(first.address, "caller-a", 0, BUDGET, tallies[0]),
            stream(second.address, "caller-b", 0, BUDGET, tallies[1]),
        )
    for tally in tallies:
        assert tally.answered_once(1, BUDGET)
    # Each replica learns its margin on its own fallback share.
    assert within_the_learning_allowance(limited.stats.rate_limited, limited.stats.requests, budgets=2)
    assert limited.stats.max_in_one_second <= BUDGET


async def test_an_idle_slice_stops_writing_to_redis(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fleet_module, "IDLE_SLICE", 0.5)
    probe = redis_client(redis.url)
    async with governor_on(redis.url) as budget:
        caller = budget.share(0.5, "caller:gone")
        try:
            await caller.acquire(Priority.BATCH, Deadline.for_call(5.0))
            await asyncio.sleep(1.0)  # idle past IDLE_SLICE: its heartbeats stop
            before = (await probe.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
            await asyncio.sleep(1.0)
            after = (await probe.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
        finally:
            await caller.aclose()
            await probe.aclose()
    # The budget itself never acquired, so never beats: every script call would be the slice's.
    assert after == before
