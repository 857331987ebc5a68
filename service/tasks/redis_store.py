"""Tasks in Redis, for a fleet: durable across replicas (and, with AOF, across Redis restarts).

- Work is a Redis Stream read through one consumer group: each replica reads new entries, and takes
  over (XAUTOCLAIM) entries another replica left unacknowledged for longer than the lease. A task's
  outcome is saved before its entry is acknowledged (XACK), so a task taken over after its result was
  obtained is not moderated, nor billed, again.
- Deliveries are a sorted set scored by when they are due; taking one moves its score a lease ahead,
  so one left by a dead replica comes due again.
- Each task is a hash that expires after the retention. Keys name callers only hashed; a task holds
  its authenticated caller's name (its work runs as that caller, within its quotas) and never a
  secret: webhook secrets and credentials stay in the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

import redis.asyncio as redis
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerationTask

from common.cancellation import end_if_cancelled
from service.logs import RateLimitedLog
from service.tasks.model import Backlog, Task, finished

__all__ = ["RedisTaskStore"]

log = logging.getLogger(__name__)

PREFIX = "moderation:tasks:"
STREAM = PREFIX + "work"
GROUP = "workers"
DELIVERIES = PREFIX + "deliveries"
# Each read blocks less than the client's socket timeout (`service.governor.connect`).
BLOCK_MS = 200
# How often due deliveries are looked for when no local schedule says sooner.
DELIVERY_POLL = 0.2
# After a failed read (Redis away, or answering what it should not), the next one waits this long:
# what Redis holds stays there, and the readers must neither spin nor end.
READ_RETRY = 1.0

# Stores and queues the task unless its dedup key names one already: returns the stored task's id.
_ADD = """
if ARGV[1] == '1' then
  local known = redis.call('GET', KEYS[1])
  if known then return known end
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
redis.call('HSET', KEYS[2], 'view', ARGV[4], 'request', ARGV[5], 'url', ARGV[6], 'caller', ARGV[7],
  'owner', ARGV[8], 'deadline', ARGV[9], 'traceparent', ARGV[10])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('XADD', KEYS[3], '*', 'id', ARGV[2])
return ARGV[2]
"""
# Takes up to ARGV[3] deliveries due by ARGV[1], each leased until ARGV[2].
_TAKE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return due
"""


class RedisTaskStore:
    def __init__(self, client: redis.Redis, *, retention: float, lease: float) -> None:
        self._redis = client
        self._retention = retention
        self._lease = lease
        self._consumer = f"{socket.gethostname()}:{id(self):x}:{time.time_ns():x}"
        self._add = client.register_script(_ADD)
        self._take_due = client.register_script(_TAKE_DUE)
        self._work = _Inbox("tasks", self._read_work)
        self._due = _Inbox("due callbacks", self._read_deliveries)
        self._scheduled = asyncio.Event()
        self._group_made = False
        self._last_claim = 0.0

    async def add(self, task: Task, dedup: str | None) -> Task:
        ttl = int(max(0.0, task.deadline - time.time()) + self._retention) + 1
        stored = await self._add(
            keys=[_dedup_key(dedup or ""), _task_key(task.task_id), STREAM],
            args=[
                "1" if dedup else "0",
                task.task_id,
                ttl,
                task.view.SerializeToString(),
                task.request.SerializeToString(),
                task.callback_url,
                task.caller,
                task.owner,
                repr(task.deadline),
                task.traceparent,
            ],
        )
        stored_id = stored.decode() if isinstance(stored, bytes) else str(stored)
        if stored_id == task.task_id:
            return task
        known = await self.get(stored_id)
        return known if known is not None else task

    async def get(self, task_id: str) -> Task | None:
        fields = await self._redis.hgetall(_task_key(task_id))
        return _task(fields) if fields else None

    async def save(self, task: Task) -> None:
        keep = self._retention
        if task.view.delivery.HasField("next_attempt_at"):
            keep += max(0.0, task.view.delivery.next_attempt_at.ToNanoseconds() / 1e9 - time.time())
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(_task_key(task.task_id), "view", task.view.SerializeToString())
            if finished(task):
                pipe.hdel(_task_key(task.task_id), "request")  # the image, no longer needed
            pipe.expire(_task_key(task.task_id), int(keep) + 1)
            await pipe.execute()

    async def take_work(self, wait: float) -> Task | None:
        return await self._work.take(wait)

    async def renew_work(self, task: Task) -> None:
        # Claimed again by its own consumer: the entry's idle time starts over.
        await self._redis.xclaim(STREAM, GROUP, self._consumer, 0, [task.receipt], justid=True)

    async def finish_work(self, task: Task) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(STREAM, GROUP, task.receipt)
            pipe.xdel(STREAM, task.receipt)
            await pipe.execute()

    async def schedule_delivery(self, task_id: str, at: float) -> None:
        await self._redis.zadd(DELIVERIES, {task_id: at})
        self._scheduled.set()

    async def take_delivery(self, wait: float) -> Task | None:
        return await self._due.take(wait)

    async def finish_delivery(self, task_id: str) -> None:
        await self._redis.zrem(DELIVERIES, task_id)

    async def backlog(self) -> Backlog:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xlen(STREAM)
            pipe.xrange(STREAM, count=1)
            length, first = await pipe.execute()
        if not first:
            return Backlog(int(length), 0.0)
        added_ms = int(first[0][0].decode().partition("-")[0])
        return Backlog(int(length), max(0.0, time.time() - added_ms / 1000))

    async def aclose(self) -> None:
        await self._work.aclose()
        await self._due.aclose()
        await self._redis.aclose()

    async def _read_work(self) -> None:
        """Fills the local queue for as many workers as wait: entries abandoned past the lease first."""
        await self._make_group()
        while True:
            wanted = self._work.wanted()
            if wanted <= 0:
                await asyncio.sleep(BLOCK_MS / 1000)
                continue
            try:
                entries = await self._abandoned(wanted)
                if not entries:
                    read: Any = await self._redis.xreadgroup(
                        GROUP, self._consumer, {STREAM: ">"}, count=wanted, block=BLOCK_MS
                    )
                    entries = read[0][1] if read else []
            except redis.ResponseError as lost:
                if "NOGROUP" not in str(lost):
                    raise
                # Redis came back without its data (no AOF): the group, and the queue, start again.
                self._group_made = False
                await self._make_group()
                continue
            for receipt, fields in entries:
                task = await self.get(fields[b"id"].decode()) if fields else None
                if task is None:
                    await self._redis.xack(STREAM, GROUP, receipt)  # expired meanwhile
                    continue
                task.receipt = receipt.decode()
                self._work.put(task)

    async def _abandoned(self, count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Entries other consumers left unacknowledged for a lease, now this consumer's (once a lease/4)."""
        now = time.monotonic()
        if now - self._last_claim < self._lease / 4:
            return []
        self._last_claim = now
        claimed = await self._redis.xautoclaim(
            STREAM, GROUP, self._consumer, int(self._lease * 1000), "0-0", count=count
        )
        return list(claimed[1])

    async def _read_deliveries(self) -> None:
        while True:
            wanted = self._due.wanted()
            if wanted > 0:
                now = time.time()
                due = await self._take_due(keys=[DELIVERIES], args=[now, now + self._lease, wanted])
                for raw in due:
                    task = await self.get(raw.decode())
                    if task is None:
                        await self._redis.zrem(DELIVERIES, raw)  # expired meanwhile
                    else:
                        self._due.put(task)
                if due:
                    continue
            self._scheduled.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DELIVERY_POLL):
                    await self._scheduled.wait()

    async def _make_group(self) -> None:
        if self._group_made:
            return
        try:
            await self._redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exists:
            if "BUSYGROUP" not in str(exists):
                raise
        self._group_made = True


class _Inbox:
    """Tasks read from Redis for the takers waiting here: one reader asks for as many as they are."""

    def __init__(self, what: str, read: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._read = read
        self._queue: asyncio.Queue[Task] = asyncio.Queue()
        self._takers = 0
        self._reader: asyncio.Task[None] | None = None
        self._failures = RateLimitedLog(log, f"{what} not read from Redis; reading again", interval=30.0)

    async def take(self, wait: float) -> Task | None:
        self._takers += 1
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_until_closed())
        try:
            async with asyncio.timeout(wait):
                return await self._queue.get()
        except TimeoutError:
            return None
        finally:
            self._takers -= 1

    def wanted(self) -> int:
        return self._takers - self._queue.qsize()

    async def _read_until_closed(self) -> None:
        """The reader, started again after any failure (one log line per 30 s says which)."""
        while True:
            try:
                await self._read()
            except asyncio.CancelledError:
                raise
            except Exception as failure:
                # redis-py can turn the cancellation of a command in flight into its own error: a reader
                # being closed must end, not read again.
                end_if_cancelled()
                self._failures.record(error=type(failure).__name__)
                await asyncio.sleep(READ_RETRY)

    def put(self, task: Task) -> None:
        self._queue.put_nowait(task)

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


def _task_key(task_id: str) -> str:
    return f"{PREFIX}task:{task_id}"


def _dedup_key(dedup: str) -> str:
    return f"{PREFIX}dedup:{dedup}"


def _task(fields: dict[Any, Any]) -> Task:
    return Task(
        view=ModerationTask.FromString(fields[b"view"]),
        request=ModerateImageRequest.FromString(fields.get(b"request", b"")),
        callback_url=fields[b"url"].decode(),
        caller=fields[b"caller"].decode(),
        owner=fields[b"owner"].decode(),
        deadline=float(fields[b"deadline"]),
        traceparent=fields[b"traceparent"].decode(),
    )
