"""Asynchronous tasks (Priority.BACKGROUND) get only the budget nobody else waits for, from the
in-process governor and from the fleet governor on a real redis-server alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service.deadlines import Deadline
from service.governor import FleetGovernor, Governor, Priority, RateGovernor
from service.governor.connect import redis_client
from service.governor.fallback import HORIZON
from service.governor.fleet import fleet_parameters
from service.governor.schedule import Schedule
from testbed.redis_server import RedisServer

QPS = 40
BACKGROUND, OTHERS = 12, 12
FLEET_ITEMS = 20


@pytest.fixture(params=["local", "fleet"])
async def governor(request: pytest.FixtureRequest, redis: RedisServer) -> AsyncIterator[Governor]:
    made: Governor
    if request.param == "local":
        made = RateGovernor(QPS)
    else:
        client = redis_client(redis.url)
        made = FleetGovernor(
            Schedule(client, "budget", fleet_parameters(QPS, 0.5)), name="tencent", on_close=client.aclose
        )
    yield made
    await made.aclose()


async def test_background_waits_for_every_call_and_stream_item_waiting(governor: Governor) -> None:
    order: list[Priority] = []

    async def one(priority: Priority) -> None:
        await governor.acquire(priority, Deadline.for_call(None))
        order.append(priority)

    tasks = [asyncio.create_task(one(Priority.BACKGROUND)) for _ in range(BACKGROUND)]
    await asyncio.sleep(0)
    others = [one(p) for p in (Priority.BATCH, Priority.INTERACTIVE) for _ in range(OTHERS // 2)]
    await asyncio.gather(*tasks, *others)
    # The first task or two may be granted before the others queued; after that, every call and item
    # waiting comes first, and the tasks get the slots left.
    first_task_after = order.index(Priority.BACKGROUND, 2)
    assert order[first_task_after:] == [Priority.BACKGROUND] * (len(order) - first_task_after)
    assert order.count(Priority.BACKGROUND) == BACKGROUND


async def test_in_a_fleet_tasks_wait_for_another_replicas_stream_items(redis: RedisServer) -> None:
    clients = [redis_client(redis.url) for _ in range(2)]
    streaming, tasking = (
        FleetGovernor(Schedule(c, "budget", fleet_parameters(QPS, 0.5)), name="tencent", on_close=c.aclose)
        for c in clients
    )
    order: list[Priority] = []
    streaming_started = asyncio.Event()

    async def one(governor: FleetGovernor, priority: Priority) -> None:
        await governor.acquire(priority, Deadline.for_call(None))
        order.append(priority)
        streaming_started.set()

    try:
        items = [asyncio.create_task(one(streaming, Priority.BATCH)) for _ in range(FLEET_ITEMS)]
        await streaming_started.wait()
        await asyncio.gather(*items, *(one(tasking, Priority.BACKGROUND) for _ in range(2 * FLEET_ITEMS)))
    finally:
        await streaming.aclose()
        await tasking.aclose()
    # While the stream's replica has items waiting it keeps the schedule a horizon ahead: the other
    # replica's tasks find no free time within a quarter of it (a fair split would give them half).
    last_item = len(order) - 1 - order[::-1].index(Priority.BATCH)
    assert order[:last_item].count(Priority.BACKGROUND) <= QPS * HORIZON / 4 + 1
