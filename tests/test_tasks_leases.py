"""The Redis task store's leases on a real redis-server: a task renewed by its taker is not taken over;
one left silent for a lease is, and its first taker's next renewal says so; one left behind many held
ones is found too; a billed attempt recorded sent by a replica that died is known to its successor."""

from __future__ import annotations

import asyncio
import time

import pytest
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerationTask, TaskState
from redis import exceptions as redis_errors

from service.governor.connect import redis_client
from service.tasks.doubt import in_doubt
from service.tasks.model import Task, new_task_id
from service.tasks.redis_store import RedisTaskStore
from testbed.redis_server import RedisServer

ACCOUNT = "a1" * 16
LEASE = 1.0
# More entries held (and renewed) than one look for abandoned ones scans.
HELD = 15


def store_for(server: RedisServer) -> RedisTaskStore:
    return RedisTaskStore(redis_client(server.url), accounts=(ACCOUNT,), retention=60, lease=LEASE)


async def test_a_renewed_task_stays_its_takers_and_a_silent_one_is_taken_over(redis: RedisServer) -> None:
    first, second = store_for(redis), store_for(redis)
    try:
        now = time.time()
        view = ModerationTask(task_id=new_task_id(now), state=TaskState.TASK_STATE_PENDING)
        task = Task(view, ModerateImageRequest(data_id="a"), "", "", "o", now + 60, account=ACCOUNT)
        await first.add(task, None)
        held = await first.take_work(2)
        assert held is not None
        # Renewed more often than the lease: the other replica finds nothing to take over.
        loop = asyncio.get_running_loop()
        until = loop.time() + 2.5 * LEASE
        while loop.time() < until:
            assert await first.renew_work(held)
            assert await second.take_work(LEASE / 3) is None
        # Silent for a lease: taken over, and the first taker learns it at its next renewal.
        taken_over = await second.take_work(3 * LEASE)
        assert taken_over is not None
        assert taken_over.task_id == held.task_id
        assert not await first.renew_work(held)
        assert await second.renew_work(taken_over)
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_task_abandoned_behind_many_held_ones_is_taken_over(redis: RedisServer) -> None:
    """XAUTOCLAIM looks at ten pending entries per task wanted: a look that always began at the start
    of the pending list would never reach an abandoned entry behind more held ones than that."""
    holder, dead, taker = store_for(redis), store_for(redis), store_for(redis)
    try:
        now = time.time()
        for _ in range(HELD + 1):
            view = ModerationTask(task_id=new_task_id(now), state=TaskState.TASK_STATE_PENDING)
            await holder.add(Task(view, ModerateImageRequest(), "", "", "o", now + 60, account=ACCOUNT), None)
        held: list[Task] = []

        async def renew_held() -> None:
            for task in held:
                assert await holder.renew_work(task)

        while len(held) < HELD:  # each renewed as the next is taken: held all along
            taken = await holder.take_work(2)
            assert taken is not None
            held.append(taken)
            await renew_held()
        abandoned = await dead.take_work(2)  # its taker dies: never renewed
        assert abandoned is not None

        async def keep_holding() -> None:
            while True:
                await renew_held()
                await asyncio.sleep(LEASE / 4)

        renewing = asyncio.create_task(keep_holding())
        try:
            taken_over = await taker.take_work(6 * LEASE)
        finally:
            renewing.cancel()
        assert taken_over is not None
        assert taken_over.task_id == abandoned.task_id
    finally:
        for store in (holder, dead, taker):
            await store.aclose()


async def test_an_attempt_recorded_sent_is_known_to_the_replica_taking_the_task_over(
    redis: RedisServer,
) -> None:
    dead, taker = store_for(redis), store_for(redis)
    try:
        now = time.time()
        view = ModerationTask(task_id=new_task_id(now), state=TaskState.TASK_STATE_PENDING)
        await dead.add(Task(view, ModerateImageRequest(), "", "", "o", now + 60, account=ACCOUNT), None)
        taken = await dead.take_work(2)
        assert taken is not None
        assert not in_doubt(taken)
        taken.view.state = TaskState.TASK_STATE_RUNNING
        await dead.save(taken)
        await dead.record_sent(taken, now)
        await dead.record_sent(taken, now + 1)  # a retry
        # Its taker dies with the call in flight: the replica taking the task over knows it was sent.
        taken_over = await taker.take_work(3 * LEASE)
        assert taken_over is not None
        assert (taken_over.attempts_sent, taken_over.sent_at) == (2, now + 1)
        assert in_doubt(taken_over)
    finally:
        await dead.aclose()
        await taker.aclose()


async def test_an_attempt_of_a_task_gone_from_redis_is_not_recorded(redis: RedisServer) -> None:
    store = store_for(redis)
    try:
        now = time.time()
        view = ModerationTask(task_id=new_task_id(now), state=TaskState.TASK_STATE_PENDING)
        gone = Task(view, ModerateImageRequest(), "", "", "o", now + 60, account=ACCOUNT)
        with pytest.raises(redis_errors.ResponseError, match="the task is gone"):
            await store.record_sent(gone, now)
        assert await store.get(gone.task_id) is None  # no hash left behind without an expiry
    finally:
        await store.aclose()
