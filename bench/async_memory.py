"""What a finished task costs to keep: Redis's used_memory per task (a real redis-server, the task store
of fleet mode), and the Python heap per task of the in-process store, over `count` tasks with a typical
answer (three label results), a URL image and a callback."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from dataclasses import dataclass

import redis
from moderation.v1.moderation_service_pb2 import (
    DeliveryState,
    ModerateImageRequest,
    ModerateImageResponse,
    ModerationTask,
    Suggestion,
    TaskState,
)

from service.governor.connect import redis_client
from service.tasks.memory import MemoryTaskStore
from service.tasks.model import Task, new_task_id
from service.tasks.redis_store import RedisTaskStore
from testbed.redis_server import redis_server

__all__ = ["TaskMemory", "measure"]

# Store calls in flight at once while filling Redis.
BATCH = 500
# A hashed account, as `service.tasks.accounts` names a task's namespace.
ACCOUNT = "cd" * 16


@dataclass(frozen=True)
class TaskMemory:
    redis_bytes: float
    process_bytes: float


def _task(index: int) -> Task:
    now = time.time()
    view = ModerationTask(task_id=new_task_id(now), state=TaskState.TASK_STATE_PENDING)
    view.created_at.GetCurrentTime()
    view.deadline.GetCurrentTime()
    view.delivery.state = DeliveryState.DELIVERY_STATE_PENDING
    request = ModerateImageRequest(
        url=f"https://images.example.com/u/{index:08d}/photo.jpg",
        data_id=f"user-{index}-photo",
        biz_type="avatars",
    )
    traceparent = f"00-{'1' * 32}-{'2' * 16}-01"
    return Task(
        view,
        request,
        "https://hooks.example.com/moderation",
        "",
        "ab" * 16,
        now + 3600,
        traceparent,
        account=ACCOUNT,
    )


def _finish(task: Task) -> None:
    result = ModerateImageResponse(
        suggestion=Suggestion.SUGGESTION_PASS,
        label="Normal",
        data_id=task.request.data_id,
        biz_type="avatars",
        request_id="3f1c9a8e-2b7d-4f51-9c0e-8a6b5d4e3f21",
        backend="tencent",
        attempts=1,
        file_md5="0f" * 16,
    )
    for scene in ("Porn", "Terror", "Ad"):
        result.label_results.add(scene=scene, suggestion=Suggestion.SUGGESTION_PASS, label="Normal")
    view = task.view
    view.state = TaskState.TASK_STATE_SUCCEEDED
    view.result.CopyFrom(result)
    view.finished_at.GetCurrentTime()
    view.delivery.state = DeliveryState.DELIVERY_STATE_DELIVERED
    view.delivery.attempts, view.delivery.last_http_status = 1, 200


async def _in_redis(count: int) -> float:
    with redis_server() as server, redis.Redis.from_url(server.url) as probe:
        before = int(probe.info("memory")["used_memory"])
        store = RedisTaskStore(
            redis_client(server.url, max_connections=32), accounts=(ACCOUNT,), retention=86_400, lease=60
        )
        tasks = [_task(i) for i in range(count)]
        for start in range(0, count, BATCH):
            await asyncio.gather(*(store.add(t, t.task_id) for t in tasks[start : start + BATCH]))
        for task in tasks:
            _finish(task)
        for start in range(0, count, BATCH):
            await asyncio.gather(*(store.save(t) for t in tasks[start : start + BATCH]))
        # What stays for the retention: each task (and its dedup key), its work entry acknowledged.
        probe.delete(f"moderation:tasks:{ACCOUNT}:work")
        used = int(probe.info("memory")["used_memory"]) - before
        await store.aclose()
    return used / count


async def _in_process(count: int) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        store = MemoryTaskStore(86_400)
        for index in range(count):
            task = _task(index)
            await store.add(task, task.task_id)
            _finish(task)
            await store.save(task)
        while await store.take_work(0) is not None:
            pass  # taken, as the worker takes them: what stays is what the retention keeps
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return used / count


async def measure(count: int) -> TaskMemory:
    return TaskMemory(await _in_redis(count), await _in_process(count))
