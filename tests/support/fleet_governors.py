"""Fleet governors in one process on a real redis-server, each replica with its own client, and the
times their grants came."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable

import pytest

from service.deadlines import Deadline
from service.governor import FleetGovernor, Priority
from service.governor.connect import redis_client
from service.governor.fleet import fleet_parameters
from service.governor.schedule import Schedule
from testbed.redis_server import RedisServer

QPS = 20
Factory = Callable[..., FleetGovernor]


@pytest.fixture
async def replicas(redis: RedisServer) -> AsyncIterator[Factory]:
    made: list[FleetGovernor] = []

    def make(
        *, clock_offset: float = 0.0, clock: Callable[[], float] | None = None, key: str = "budget"
    ) -> FleetGovernor:
        """A replica whose clock is `clock_offset` ahead of the loop's, or is `clock`."""
        client = redis_client(redis.url)
        loop = asyncio.get_running_loop()
        if clock is None and clock_offset:
            clock = functools.partial(_ahead, loop, clock_offset)
        governor = FleetGovernor(
            Schedule(client, key, fleet_parameters(QPS, 0.5)),
            name="tencent",
            clock=clock,
            on_close=client.aclose,
        )
        made.append(governor)
        return governor

    yield make
    for governor in made:
        await governor.aclose()


async def grant_times(governors: list[FleetGovernor], count: int) -> list[tuple[float, int]]:
    loop = asyncio.get_running_loop()
    times: list[tuple[float, int]] = []

    async def one(index: int) -> None:
        await governors[index % len(governors)].acquire(Priority.BATCH, Deadline.for_call(None))
        times.append((loop.time(), index % len(governors)))

    await asyncio.gather(*(one(i) for i in range(count)))
    return sorted(times)


def _ahead(loop: asyncio.AbstractEventLoop, seconds: float) -> float:
    return loop.time() + seconds
