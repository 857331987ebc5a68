"""Tasks of gateways on different IMS accounts sharing one Redis database: each account's tasks live in
a namespace of its own (the hashed account, as the verdict cache's keys). Two real gateway processes on
two emulator accounts and one redis-server: the same caller and idempotency key make a task on each, run
and billed on its own account, and neither gateway finds the other's. The store itself, on a real
redis-server: every key is in its account's namespace, no key or value names an account or a caller, and
tasks queued under an account no gateway serves are counted, not lost from sight."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from moderation.v1.moderation_service_pb2 import (
    GetModerationTaskRequest,
    ModerateImageRequest,
    ModerationTask,
    TaskState,
)
from moderation.v1.moderation_service_pb2_grpc import ModerationServiceStub
from redis import Redis

from emulator import EmulatorConfig, ImsEmulator
from service.governor.connect import redis_client
from service.tasks.model import Task, dedup_key, hashed_caller, new_task_id
from service.tasks.redis_store import ACCOUNTS, RedisTaskStore
from testbed.client import open_channel
from testbed.redis_server import RedisServer
from tests.support.gateway import SECRET_ID, SECRET_KEY
from tests.support.tasks import TASK_SETTINGS, Receiver, gateway_process, listening, settled, submit

OTHER_SECRET_ID = "AKID" + secrets.token_hex(16)
OTHER_SECRET_KEY = secrets.token_urlsafe(24)
CALLER = "uploads"
TOKEN = "uploads-token-0123456789"
CALLED_AS = (("authorization", f"Bearer {TOKEN}"),)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with listening() as receiver:
        yield receiver


def everything_in(server: RedisServer) -> list[bytes]:
    """Every key in the database, and every value it holds (of the types the gateway writes), but a task's
    `submitted_by`: the caller's name, whom its work runs as (not a secret: the access log names it)."""
    found: list[bytes] = []
    with Redis.from_url(server.url) as probe:
        for key in probe.scan_iter(count=1000):
            found.append(key)
            kind = probe.type(key).decode()
            if kind == "string":
                found.append(probe.get(key) or b"")
            elif kind == "hash":
                fields = probe.hgetall(key)
                fields.pop(b"submitted_by", None)
                found += [part for pair in fields.items() for part in pair]
            elif kind in ("set", "zset"):
                found += list(probe.smembers(key) if kind == "set" else probe.zrange(key, 0, -1))
            elif kind == "stream":
                found += [v for _, fields in probe.xrange(key) for pair in fields.items() for v in pair]
    return found


async def get_error(stub: ModerationServiceStub, task_id: str) -> grpc.StatusCode:
    try:
        await stub.GetModerationTask(GetModerationTaskRequest(task_id=task_id), metadata=CALLED_AS, timeout=5)
    except grpc.aio.AioRpcError as refused:
        return refused.code()
    return grpc.StatusCode.OK


async def test_gateways_on_two_accounts_sharing_redis_never_share_a_task(
    redis: RedisServer, receiver: Receiver, tmp_path: Path
) -> None:
    (tmp_path / "tokens").write_text(f"{CALLER} {TOKEN}\n")
    settings = {
        **TASK_SETTINGS,
        "MODERATION_REDIS_URL": redis.url,
        "MODERATION_AUTH_TOKENS_FILE": str(tmp_path / "tokens"),
    }
    first_account = EmulatorConfig(secret_id=SECRET_ID, secret_key=SECRET_KEY, latency=0.02)
    second_account = EmulatorConfig(secret_id=OTHER_SECRET_ID, secret_key=OTHER_SECRET_KEY, latency=0.02)
    with (
        ImsEmulator(first_account, host="127.0.0.1", port=0) as first_ims,
        ImsEmulator(second_account, host="127.0.0.1", port=0) as second_ims,
        gateway_process(first_ims, **settings) as (_, first),
        gateway_process(
            second_ims,
            **settings,
            TENCENTCLOUD_SECRET_ID=OTHER_SECRET_ID,
            TENCENTCLOUD_SECRET_KEY=OTHER_SECRET_KEY,
        ) as (_, second),
    ):
        async with open_channel(first) as one, open_channel(second) as other:
            stubs = ModerationServiceStub(one), ModerationServiceStub(other)
            # The same caller, data_id and idempotency key on both: a task on each account.
            ids = [await submit(s, "photo-1", receiver.url(), "same-key", CALLED_AS) for s in stubs]
            assert ids[0] != ids[1]
            # Within an account, the key still names one task.
            assert await submit(stubs[0], "photo-1", receiver.url(), "same-key", CALLED_AS) == ids[0]
            await receiver.wait_for_tasks(ids)
            for stub, task_id in zip(stubs, ids, strict=True):
                task: ModerationTask = await settled(stub, task_id, metadata=CALLED_AS)
                assert task.state == TaskState.TASK_STATE_SUCCEEDED
            assert await get_error(stubs[1], ids[0]) is grpc.StatusCode.NOT_FOUND
            assert await get_error(stubs[0], ids[1]) is grpc.StatusCode.NOT_FOUND
    # Each task was run, and billed, once and on its own account.
    for ims in (first_ims, second_ims):
        assert [params.get("DataId") for _, params in ims.stats.received] == ["photo-1"]
        assert ims.stats.billed == 1
    stored = b"\n".join(everything_in(redis))
    for named in (SECRET_ID, OTHER_SECRET_ID, CALLER, TOKEN):
        assert named.encode() not in stored


def stored_task(account: str, data_id: str) -> Task:
    now = time.time()
    return Task(
        view=ModerationTask(task_id=new_task_id(now), state=TaskState.TASK_STATE_PENDING),
        request=ModerateImageRequest(data_id=data_id),
        callback_url="",
        caller=hashed_caller(CALLER),
        owner=hashed_caller(CALLER),
        deadline=now + 60,
        account=account,
    )


def store_for(server: RedisServer, *accounts: str) -> RedisTaskStore:
    return RedisTaskStore(redis_client(server.url), accounts=accounts, retention=60, lease=30)


async def test_each_account_has_its_namespace_and_unserved_ones_are_counted(redis: RedisServer) -> None:
    first, second = "a1" * 16, "b2" * 16  # hashed accounts, as `service.tasks.accounts` gives them
    ours, theirs = store_for(redis, first), store_for(redis, second)
    try:
        dedup = dedup_key(CALLER, "same-key", "")
        mine = await ours.add(stored_task(first, "photo-1"), dedup)
        other = await theirs.add(stored_task(second, "photo-1"), dedup)
        assert other.task_id != mine.task_id
        assert await ours.get(other.task_id) is None
        assert await theirs.get(mine.task_id) is None
        # Each store is handed its own account's work only.
        taken = await ours.take_work(2)
        assert taken is not None
        assert taken.task_id == mine.task_id
        assert await ours.take_work(0.5) is None
        # What ours does not serve, it counts: the other account's task still queued.
        assert (await ours.backlog()).unserved == 1
        await ours.finish_work(taken)
        assert (await ours.backlog()).pending == 0
    finally:
        await ours.aclose()
        await theirs.aclose()
    with Redis.from_url(redis.url) as probe:
        keys = {key.decode() for key in probe.scan_iter()}
    assert keys - {ACCOUNTS}
    assert all(
        key == ACCOUNTS or key.startswith((f"moderation:tasks:{first}:", f"moderation:tasks:{second}:"))
        for key in keys
    )
    stored = b"\n".join(everything_in(redis))
    assert CALLER.encode() not in stored
    assert b"same-key" not in stored
