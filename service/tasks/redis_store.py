"""Tasks in Redis, for a fleet: durable across replicas (and, with AOF, across Redis restarts).

- Work is a Redis Stream read through one consumer group: each replica reads new entries, and takes
  over (XAUTOCLAIM) entries another replica left unacknowledged for longer than the lease. A task's
  outcome is saved before its entry is acknowledged (XACK), so a task taken over after its result was
  obtained is not moderated, nor billed, again.
- Deliveries are a sorted set scored by when they are due; taking one moves its score a lease ahead,
  so one left by a dead replica comes due again.
- Just before each billed backend attempt of a task is sent, the task's hash counts it and notes when
  (`attempts_sent`, `sent_at`): a task taken over with an attempt sent and no outcome saved is in doubt
  (`service.tasks.doubt`).
- Each task is a hash that expires after the retention. Keys and values name callers only hashed,
  and never hold a secret: webhook secrets and credentials stay in the gateway.
- Every key is in the namespace of the account the task was submitted on (the hashed account of its
  route's first backend, as the verdict cache's keys are): `moderation:tasks:<account>:work`,
  `…:deliveries`, `…:task:<id>` and `…:dedup:<hash>`. Gateways on other IMS accounts sharing the Redis
  database never read, claim, dedup against or answer each other's tasks, and a task is never run on
  another account than the one it was submitted on. The set `moderation:tasks:accounts` names (hashed)
  every namespace that ever held a task, so the tasks queued under an account no replica serves any
  more are counted (`Backlog.unserved`) instead of waiting unseen.
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
# Every namespace (hashed account) that ever held a task.
ACCOUNTS = PREFIX + "accounts"
GROUP = "workers"
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
  'owner', ARGV[8], 'deadline', ARGV[9], 'traceparent', ARGV[10], 'submitted_by', ARGV[12])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('XADD', KEYS[3], '*', 'id', ARGV[2])
redis.call('SADD', KEYS[4], ARGV[11])
return ARGV[2]
"""
# Claims the entry ARGV[2] of the stream KEYS[1] again for its consumer ARGV[3] (its idle time starts
# over) if that consumer still holds it: 1, else (taken over) 0.
_RENEW = """
local held = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[3])
if #held == 0 then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
"""
# Counts a billed attempt of the task KEYS[1] and notes when it is sent (ARGV[1]): the new count. A task
# gone (past its retention) is an error: no hash without an expiry is left behind.
_RECORD_SENT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('the task is gone') end
local counted = redis.call('HINCRBY', KEYS[1], 'attempts_sent', 1)
redis.call('HSET', KEYS[1], 'sent_at', ARGV[1])
return counted
"""
# Takes up to ARGV[3] deliveries due by ARGV[1] from the schedules KEYS (one per account), each leased
# until ARGV[2]: a flat list of (index of its schedule in KEYS, task id).
_TAKE_DUE = """
local taken, left = {}, tonumber(ARGV[3])
for index, key in ipairs(KEYS) do
  if left <= 0 then break end
  local due = redis.call('ZRANGEBYSCORE', key, '-inf', ARGV[1], 'LIMIT', 0, left)
  for _, id in ipairs(due) do
    redis.call('ZADD', key, ARGV[2], id)
    table.insert(taken, index - 1)
    table.insert(taken, id)
  end
  left = left - #due
end
return taken
"""


class RedisTaskStore:
    """`accounts`: the namespaces (hashed accounts) this gateway serves, the only ones it reads."""

    def __init__(
        self, client: redis.Redis, *, accounts: tuple[str, ...], retention: float, lease: float
    ) -> None:
        self._redis = client
        self._accounts = accounts
        self._streams = {_stream(account): account for account in accounts}
        self._retention = retention
        self._lease = lease
        self._consumer = f"{socket.gethostname()}:{id(self):x}:{time.time_ns():x}"
        self._add = client.register_script(_ADD)
        self._take_due = client.register_script(_TAKE_DUE)
        self._renew = client.register_script(_RENEW)
        self._record_sent = client.register_script(_RECORD_SENT)
        self._work = _Inbox("tasks", self._read_work)
        self._due = _Inbox("due callbacks", self._read_deliveries)
        self._scheduled = asyncio.Event()
        self._groups_made = False
        self._last_claim = 0.0
        # Per stream, where the next look for abandoned entries starts: XAUTOCLAIM scans only ten times
        # its count of pending entries per call, so each look goes on where the last one stopped, and
        # entries behind many live ones are reached too.
        self._claim_from = dict.fromkeys(self._streams, "0-0")

    async def add(self, task: Task, dedup: str | None) -> Task:
        ttl = int(max(0.0, task.deadline - time.time()) + self._retention) + 1
        stored = await self._add(
            keys=[
                _dedup_key(task.account, dedup or ""),
                _task_key(task.account, task.task_id),
                _stream(task.account),
                ACCOUNTS,
            ],
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
                task.account,
                task.submitted_by,
            ],
        )
        stored_id = stored.decode() if isinstance(stored, bytes) else str(stored)
        if stored_id == task.task_id:
            return task
        known = await self._get(task.account, stored_id)
        return known if known is not None else task

    async def get(self, task_id: str) -> Task | None:
        """The task of that id in any namespace this gateway serves (task ids are unguessable, so they do
        not collide across namespaces); another account's task is not found."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for account in self._accounts:
                pipe.hgetall(_task_key(account, task_id))
            found = await pipe.execute()
        return next((_task(account, f) for account, f in zip(self._accounts, found, strict=True) if f), None)

    async def save(self, task: Task) -> None:
        keep = self._retention
        if task.view.delivery.HasField("next_attempt_at"):
            keep += max(0.0, task.view.delivery.next_attempt_at.ToNanoseconds() / 1e9 - time.time())
        key = _task_key(task.account, task.task_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, "view", task.view.SerializeToString())
            if finished(task):
                pipe.hdel(key, "request")  # the image, no longer needed
            pipe.expire(key, int(keep) + 1)
            await pipe.execute()

    async def record_sent(self, task: Task, at: float) -> None:
        counted = await self._record_sent(keys=[_task_key(task.account, task.task_id)], args=[repr(at)])
        task.attempts_sent = int(counted)
        task.sent_at = at

    async def take_work(self, wait: float) -> Task | None:
        return await self._work.take(wait)

    async def renew_work(self, task: Task) -> bool:
        held = await self._renew(keys=[_stream(task.account)], args=[GROUP, task.receipt, self._consumer])
        return bool(held)

    async def finish_work(self, task: Task) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(_stream(task.account), GROUP, task.receipt)
            pipe.xdel(_stream(task.account), task.receipt)
            await pipe.execute()

    async def schedule_delivery(self, task: Task, at: float) -> None:
        await self._redis.zadd(_deliveries(task.account), {task.task_id: at})
        self._scheduled.set()

    async def take_delivery(self, wait: float) -> Task | None:
        return await self._due.take(wait)

    async def finish_delivery(self, task: Task) -> None:
        await self._redis.zrem(_deliveries(task.account), task.task_id)

    async def backlog(self) -> Backlog:
        known = {
            raw.decode() if isinstance(raw, bytes) else raw for raw in await self._redis.smembers(ACCOUNTS)
        }
        unserved = sorted(known - set(self._accounts))
        async with self._redis.pipeline(transaction=False) as pipe:
            for account in self._accounts:
                pipe.xlen(_stream(account))
                pipe.xrange(_stream(account), count=1)
            for account in unserved:
                pipe.xlen(_stream(account))
            answers = await pipe.execute()
        served = answers[: 2 * len(self._accounts)]
        firsts = [first[0][0] for first in served[1::2] if first]
        oldest_ms = min((int(receipt.decode().partition("-")[0]) for receipt in firsts), default=None)
        return Backlog(
            pending=sum(int(length) for length in served[::2]),
            oldest_age=0.0 if oldest_ms is None else max(0.0, time.time() - oldest_ms / 1000),
            unserved=sum(int(length) for length in answers[2 * len(self._accounts) :]),
        )

    async def aclose(self) -> None:
        await self._work.aclose()
        await self._due.aclose()
        await self._redis.aclose()

    async def _read_work(self) -> None:
        """Fills the local queue for as many workers as wait: entries abandoned past the lease first."""
        await self._make_groups()
        while True:
            wanted = self._work.wanted()
            if wanted <= 0:
                await asyncio.sleep(BLOCK_MS / 1000)
                continue
            try:
                entries = await self._abandoned(wanted)
                if not entries:
                    read: Any = await self._redis.xreadgroup(
                        GROUP,
                        self._consumer,
                        dict.fromkeys(self._streams, ">"),
                        # Counted per stream: together, about as many as are wanted.
                        count=-(-wanted // len(self._streams)),
                        block=BLOCK_MS,
                    )
                    entries = [
                        (self._streams[stream.decode()], receipt, fields)
                        for stream, stream_entries in read or []
                        for receipt, fields in stream_entries
                    ]
            except redis.ResponseError as lost:
                if "NOGROUP" not in str(lost):
                    raise
                # Redis came back without its data (no AOF): the groups, and the queues, start again.
                self._groups_made = False
                await self._make_groups()
                continue
            for account, receipt, fields in entries:
                task = await self._get(account, fields[b"id"].decode()) if fields else None
                if task is None:
                    await self._redis.xack(_stream(account), GROUP, receipt)  # expired meanwhile
                    continue
                task.receipt = receipt.decode()
                self._work.put(task)

    async def _abandoned(self, count: int) -> list[tuple[str, bytes, dict[bytes, bytes]]]:
        """Entries other consumers left unacknowledged for a lease, now this consumer's (once a lease/4)."""
        now = time.monotonic()
        if now - self._last_claim < self._lease / 4:
            return []
        self._last_claim = now
        entries: list[tuple[str, bytes, dict[bytes, bytes]]] = []
        for stream, account in self._streams.items():
            if len(entries) >= count:
                break
            claimed = await self._redis.xautoclaim(
                stream,
                GROUP,
                self._consumer,
                int(self._lease * 1000),
                self._claim_from[stream],
                count=count - len(entries),
            )
            following = claimed[0]
            self._claim_from[stream] = following.decode() if isinstance(following, bytes) else str(following)
            entries += [(account, receipt, fields) for receipt, fields in claimed[1]]
        return entries

    async def _read_deliveries(self) -> None:
        schedules = [_deliveries(account) for account in self._accounts]
        while True:
            wanted = self._due.wanted()
            if wanted > 0:
                now = time.time()
                due = await self._take_due(keys=schedules, args=[now, now + self._lease, wanted])
                for index, raw in zip(due[::2], due[1::2], strict=True):
                    account = self._accounts[int(index)]
                    task = await self._get(account, raw.decode())
                    if task is None:
                        await self._redis.zrem(schedules[int(index)], raw)  # expired meanwhile
                    else:
                        self._due.put(task)
                if due:
                    continue
            self._scheduled.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DELIVERY_POLL):
                    await self._scheduled.wait()

    async def _get(self, account: str, task_id: str) -> Task | None:
        fields = await self._redis.hgetall(_task_key(account, task_id))
        return _task(account, fields) if fields else None

    async def _make_groups(self) -> None:
        if self._groups_made:
            return
        for stream in self._streams:
            try:
                await self._redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except redis.ResponseError as exists:
                if "BUSYGROUP" not in str(exists):
                    raise
        self._groups_made = True


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


def _stream(account: str) -> str:
    return f"{PREFIX}{account}:work"


def _deliveries(account: str) -> str:
    return f"{PREFIX}{account}:deliveries"


def _task_key(account: str, task_id: str) -> str:
    return f"{PREFIX}{account}:task:{task_id}"


def _dedup_key(account: str, dedup: str) -> str:
    return f"{PREFIX}{account}:dedup:{dedup}"


def _task(account: str, fields: dict[Any, Any]) -> Task:
    return Task(
        view=ModerationTask.FromString(fields[b"view"]),
        request=ModerateImageRequest.FromString(fields.get(b"request", b"")),
        callback_url=fields[b"url"].decode(),
        caller=fields[b"caller"].decode(),
        owner=fields[b"owner"].decode(),
        deadline=float(fields[b"deadline"]),
        traceparent=fields[b"traceparent"].decode(),
        account=account,
        submitted_by=fields.get(b"submitted_by", b"").decode(),
        attempts_sent=int(fields.get(b"attempts_sent", 0)),
        sent_at=float(fields[b"sent_at"]) if b"sent_at" in fields else None,
    )
