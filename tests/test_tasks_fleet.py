"""Asynchronous tasks in fleet mode: two real gateway processes sharing a real redis-server (append-only
file on), the emulator and a loopback receiver. Every task delivered and verified by `standardwebhooks`,
its body what GetModerationTask answers; a replica killed with SIGKILL loses nothing and pays at most once
per task (a task whose call it had in flight fails in doubt, or, if chosen, is paid again); an attempt
that cannot be recorded is not sent; receivers down
for 30 s get every callback once back; Redis restarted from its AOF loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from moderation.v1.moderation_service_pb2 import DeliveryState, GetModerationTaskRequest, ModerateImageRequest
from moderation.v1.moderation_service_pb2_grpc import ModerationServiceStub
from standardwebhooks.webhooks import Webhook

from emulator import EmulatorConfig, ImsEmulator
from testbed.client import open_channel
from testbed.redis_server import RedisServer, redis_server
from tests.support.eventually import eventually
from tests.support.gateway import SECRET_ID, SECRET_KEY
from tests.support.tasks import (
    IMAGE,
    SECRET,
    TASK_SETTINGS,
    Received,
    Receiver,
    data_of,
    gateway_process,
    listening,
    settled,
    submit,
)

WORKERS = 20
FLEET_SETTINGS = {
    **TASK_SETTINGS,
    # A short lease, so a killed replica's tasks are taken over within the test.
    "MODERATION_TASK_LEASE": "2",
    "MODERATION_TASK_WORKERS": str(WORKERS),
    "IMS_QPS": "400",
}


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    with redis_server(durable=True) as server:
        yield server


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with listening() as receiver:
        yield receiver


@contextlib.contextmanager
def emulator_with(latency: float) -> Iterator[ImsEmulator]:
    config = EmulatorConfig(secret_id=SECRET_ID, secret_key=SECRET_KEY, latency=latency)
    with ImsEmulator(config, host="127.0.0.1", port=0) as emulator:
        yield emulator


async def submit_all(addresses: list[str], count: int, callback_url: str, prefix: str = "fleet") -> list[str]:
    """`count` tasks (data ids `<prefix>-<n>`), alternately to each replica, 50 at a time."""
    async with contextlib.AsyncExitStack() as stack:
        stubs = [ModerationServiceStub(await stack.enter_async_context(open_channel(a))) for a in addresses]
        ids: list[str] = []
        for start in range(0, count, 50):
            ids += await asyncio.gather(
                *(
                    submit(stubs[i % len(stubs)], f"{prefix}-{i}", callback_url)
                    for i in range(start, min(start + 50, count))
                )
            )
        return ids


def billed_per_task(emulator: ImsEmulator) -> Counter[str]:
    return Counter(str(params.get("DataId")) for _, params in emulator.stats.received)


def ending_of(callback: Received) -> str:
    """How the task ended: SUCCEEDED, or the ErrorInfo reason of its error."""
    body = callback.json
    if body["type"] == "moderation.task.succeeded":
        return "SUCCEEDED"
    (info,) = (d for d in body["data"]["details"] if d["@type"].endswith("google.rpc.ErrorInfo"))
    return str(info["reason"])


async def test_1000_tasks_over_two_replicas_each_delivered_signed_and_as_get_answers(
    durable_redis: RedisServer, receiver: Receiver
) -> None:
    settings = {**FLEET_SETTINGS, "MODERATION_REDIS_URL": durable_redis.url}
    with (
        emulator_with(0.02) as emulator,
        gateway_process(emulator, **settings) as (_, first),
        gateway_process(emulator, **settings) as (_, second),
    ):
        ids = await submit_all([first, second], 1000, receiver.url())
        await receiver.wait_for_tasks(ids, within=60)
        hook = Webhook(SECRET)
        for request in receiver.received:
            hook.verify(request.body, request.headers)
        by_id = {r.headers["webhook-id"]: r.json for r in receiver.received}
        assert sorted(by_id) == sorted(ids)
        async with open_channel(second) as channel:
            stub = ModerationServiceStub(channel)
            for task_id in ids:
                assert by_id[task_id]["data"] == data_of(await settled(stub, task_id))
        assert billed_per_task(emulator).most_common(1)[0][1] == 1
        assert emulator.stats.billed == 1000


async def test_a_replica_killed_mid_task_loses_nothing_and_pays_at_most_once_per_task(
    durable_redis: RedisServer, receiver: Receiver, record_property: Callable[[str, object], None]
) -> None:
    """Each replica calls an emulator of its own (one account's two front doors), so which replica sent
    which call, and which calls the killed one had in flight (the calls its emulator saw abandoned), is
    known. IMS bills a call its client gave up on and cannot be asked for its answer later: a task whose
    call was in flight when its replica died (or answered, but not yet saved) is in doubt, and is not
    sent again: it fails saying so. Every other task succeeds, and no task is paid twice."""
    settings = {**FLEET_SETTINGS, "MODERATION_REDIS_URL": durable_redis.url}
    with (
        emulator_with(0.3) as doomed_ims,
        emulator_with(0.3) as survivor_ims,
        gateway_process(doomed_ims, **settings) as (doomed, doomed_address),
        gateway_process(survivor_ims, **settings) as (_, survivor),
    ):
        ids = await submit_all([doomed_address, survivor], 300, receiver.url())
        # Killed with every worker's call in flight (none between recording its attempt and sending it).
        await eventually(lambda: doomed_ims.stats.in_flight >= WORKERS, within=10, every=0.001)
        doomed.send_signal(signal.SIGKILL)
        await receiver.wait_for_tasks(ids)
        delivered = Counter(r.headers["webhook-id"] for r in receiver.received)
        assert sorted(delivered) == sorted(ids)
        # A callback sent twice (its replica died before recording it) carries the same webhook-id and body.
        for task_id in (t for t, times in delivered.items() if times > 1):
            assert len({r.body for r in receiver.received if r.headers["webhook-id"] == task_id}) == 1
    data_ids = {task_id: f"fleet-{n}" for n, task_id in enumerate(ids)}
    ended = {r.headers["webhook-id"]: ending_of(r) for r in receiver.received}
    in_doubt = {data_ids[t] for t, ending in ended.items() if ending == "TASK_OUTCOME_IN_DOUBT"}
    assert set(ended.values()) <= {"SUCCEEDED", "TASK_OUTCOME_IN_DOUBT"}
    for error in (r.json["data"] for r in receiver.received if ending_of(r) == "TASK_OUTCOME_IN_DOUBT"):
        assert error["code"] == grpc.StatusCode.ABORTED.value[0]
        assert "may have been billed" in error["message"]
    by_doomed, by_survivor = billed_per_task(doomed_ims), billed_per_task(survivor_ims)
    in_flight = doomed_ims.stats.aborted  # calls the killed replica sent and never heard answered
    record_property("calls in flight at the kill", in_flight)
    record_property("tasks in doubt", len(in_doubt))
    # At most one billed call per task, over both front doors: none paid twice.
    assert max((by_doomed + by_survivor).values()) == 1
    # Every task in doubt is one whose call the killed replica sent (in flight, or answered but not
    # saved): the tasks in its hands, WORKERS at most. Every other task was paid once and succeeded.
    assert in_doubt <= set(by_doomed)
    assert 0 < in_flight <= len(in_doubt) <= WORKERS
    assert set(by_doomed + by_survivor) - in_doubt == set(data_ids.values()) - in_doubt


async def test_with_resend_in_doubt_on_the_killed_replicas_calls_are_paid_again_and_succeed(
    durable_redis: RedisServer, receiver: Receiver
) -> None:
    """The operator chose to pay twice rather than lose a verdict: the tasks whose calls were in flight
    when their replica was killed are sent again by the replica taking them over, and succeed; each is
    paid once at each front door, nothing more."""
    settings = {
        **FLEET_SETTINGS,
        "MODERATION_REDIS_URL": durable_redis.url,
        "MODERATION_TASK_RESEND_IN_DOUBT": "on",
    }
    with emulator_with(2.0) as doomed_ims, emulator_with(0.02) as survivor_ims:
        with gateway_process(doomed_ims, **settings) as (doomed, doomed_address):
            ids = await in_flight_at(doomed_ims, doomed_address, 4, receiver.url(), "resent")
            doomed.send_signal(signal.SIGKILL)
        with gateway_process(survivor_ims, **settings):
            await receiver.wait_for_tasks(ids)
    assert {ending_of(r) for r in receiver.received} == {"SUCCEEDED"}
    data_ids = Counter(f"resent-{n}" for n in range(len(ids)))
    assert billed_per_task(doomed_ims) == billed_per_task(survivor_ims) == data_ids


async def test_a_task_in_doubt_whose_verdict_the_cache_has_succeeds_without_a_call(
    durable_redis: RedisServer, receiver: Receiver
) -> None:
    """Another call paid for the image's verdict while the task's call was in flight: the replica taking
    the task over answers it from its verdict cache, and sends nothing for it."""
    settings = {**FLEET_SETTINGS, "MODERATION_REDIS_URL": durable_redis.url, "MODERATION_CACHE": "memory"}
    # Renewed every 1.3 s: the held task is not taken over while the survivor starts on a loaded machine.
    settings["MODERATION_TASK_LEASE"] = "4"
    # The doomed replica's call hangs until its replica is killed.
    with (
        emulator_with(math.inf) as doomed_ims,
        emulator_with(0.02) as survivor_ims,
        gateway_process(doomed_ims, **settings) as (doomed, doomed_address),
    ):
        ids = await in_flight_at(doomed_ims, doomed_address, 1, receiver.url(), "cached")
        with gateway_process(survivor_ims, **settings) as (_, survivor):
            # The task is still held (its lease renewed): the survivor's own call pays for the verdict.
            async with open_channel(survivor) as channel:
                unary = ModerateImageRequest(content=IMAGE, data_id="unary")
                await ModerationServiceStub(channel).ModerateImage(unary, timeout=10)
            doomed.send_signal(signal.SIGKILL)
            await receiver.wait_for_tasks(ids)
    assert {ending_of(r) for r in receiver.received} == {"SUCCEEDED"}  # a callback may come twice
    assert billed_per_task(doomed_ims) == Counter(["cached-0"])
    assert billed_per_task(survivor_ims) == Counter(["unary"])


async def in_flight_at(
    ims: ImsEmulator, address: str, count: int, callback_url: str, prefix: str
) -> list[str]:
    """`count` tasks submitted to the replica at `address`, once `ims` has all their calls in flight."""
    ids = await submit_all([address], count, callback_url, prefix)
    await eventually(lambda: ims.stats.in_flight == count, within=10, every=0.001)
    return ids


async def refused_records(admin: aioredis.Redis) -> int:
    """The task attempts' records Redis refused (its ACL log: the HINCRBY they count with, in a script)."""
    entries: list[dict[str, Any]] = await admin.acl_log()
    return sum(int(e["count"]) for e in entries if e["object"] == "hincrby" and e["context"] == "lua")


async def test_an_attempt_that_cannot_be_recorded_is_not_sent_and_its_task_waits(
    redis: RedisServer, receiver: Receiver
) -> None:
    """Redis refuses the record of each billed attempt (an ACL denies the command it counts with) and
    serves everything else: the tasks run and reach their rate slots, and their calls are refused before
    they are sent; once the record can be written, each task is sent once and succeeds."""
    settings = {**FLEET_SETTINGS, "MODERATION_REDIS_URL": redis.url}
    admin = aioredis.Redis.from_url(redis.url)
    await admin.acl_setuser("default", enabled=True, commands=["-hincrby"])
    try:
        with emulator_with(0.02) as emulator, gateway_process(emulator, **settings) as (_, address):
            ids = await submit_all([address], 3, receiver.url(), "unrecorded")
            # Each task refused twice at least: it waited, asked again, and was refused again.
            await eventually(lambda: _at_least(refused_records(admin), 2 * len(ids)), within=20)
            assert emulator.stats.received == []
            await admin.acl_setuser("default", enabled=True, commands=["+hincrby"])
            await receiver.wait_for_tasks(ids)
    finally:
        await admin.aclose()
    assert {ending_of(r) for r in receiver.received} == {"SUCCEEDED"}
    assert billed_per_task(emulator) == Counter(f"unrecorded-{n}" for n in range(len(ids)))


async def _at_least(count: Awaitable[int], least: int) -> bool:
    return await count >= least


# Attempts 0, 1, 3, 7, 15, 23, 31, 39 s after the first (each spread by 10 %): a 30 s outage is
# attempted about seven times, and the receiver is reached again within seconds of its return.
OUTAGE_SCHEDULE = "0 1 2 4 8 8 8 8 8 8"
OUTAGE = 30.0


async def attempts_of(stub: ModerationServiceStub, task_ids: list[str]) -> list[int]:
    tasks = [await stub.GetModerationTask(GetModerationTaskRequest(task_id=t), timeout=5) for t in task_ids]
    assert all(t.delivery.state == DeliveryState.DELIVERY_STATE_PENDING for t in tasks)
    return [t.delivery.attempts for t in tasks]


@pytest.mark.system
async def test_receivers_down_for_30_s_get_every_callback_once_back(redis: RedisServer) -> None:
    """One receiver refuses connections for 30 s (its process down), the other answers 503 (its
    back end down): deliveries go on across both replicas and reach each once it is back."""
    settings = {**FLEET_SETTINGS, "MODERATION_REDIS_URL": redis.url}
    settings["MODERATION_CALLBACK_RETRY_SCHEDULE"] = OUTAGE_SCHEDULE
    stopped, failing = Receiver(), Receiver()
    await failing.start()
    failing.answers["/hook"] = (503, {})
    try:
        with (
            emulator_with(0.02) as emulator,
            gateway_process(emulator, **settings) as (_, first),
            gateway_process(emulator, **settings) as (_, second),
        ):
            began = asyncio.get_running_loop().time()
            refused = await submit_all([first, second], 10, stopped.url(), "refused")
            unavailable = await submit_all([first, second], 10, failing.url(), "unavailable")
            async with open_channel(first) as channel:
                stub = ModerationServiceStub(channel)
                # The outage itself is the scenario: its length is waited for, not a guess at progress.
                await asyncio.sleep(OUTAGE - (asyncio.get_running_loop().time() - began))
                assert min(await attempts_of(stub, refused + unavailable)) >= 5
                await stopped.start()
                failing.answers.clear()
                tasks = {t: await settled(stub, t) for t in refused + unavailable}
    finally:
        await stopped.stop()
        await failing.stop()
    assert all(t.delivery.state == DeliveryState.DELIVERY_STATE_DELIVERED for t in tasks.values())
    # The refused receiver saw each task once: the attempt that found it listening.
    assert sorted(r.headers["webhook-id"] for r in stopped.received) == sorted(refused)
    hook = Webhook(SECRET)
    for request in stopped.received + failing.received:
        hook.verify(request.body, request.headers)
    # The failing receiver saw every attempt (five or more 503s, then the 2xx), each with its task's
    # webhook-id and the same body.
    for task_id in unavailable:
        attempts = [r for r in failing.received if r.headers["webhook-id"] == task_id]
        assert len(attempts) == tasks[task_id].delivery.attempts >= 6
        assert len({r.body for r in attempts}) == 1


async def test_redis_restarted_from_its_append_only_file_loses_nothing(
    durable_redis: RedisServer, receiver: Receiver
) -> None:
    # A slower budget, so most tasks are still queued when Redis goes.
    settings = {**FLEET_SETTINGS, "MODERATION_REDIS_URL": durable_redis.url, "IMS_QPS": "50"}
    with (
        emulator_with(0.2) as emulator,
        gateway_process(emulator, **settings) as (_, first),
        gateway_process(emulator, **settings) as (_, second),
    ):
        ids = await submit_all([first, second], 200, receiver.url())
        durable_redis.stop()
        durable_redis.start()
        await receiver.wait_for_tasks(ids)
        assert {r.headers["webhook-id"] for r in receiver.received} == set(ids)
