"""Tasks in this process: for a gateway without Redis. They are drained on SIGTERM within the shutdown
grace, and lost in a crash."""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import deque

from moderation.v1.moderation_service_pb2 import ModerateImageRequest

from service.tasks.model import Backlog, Task, finished

__all__ = ["MemoryTaskStore"]


class MemoryTaskStore:
    def __init__(self, retention: float) -> None:
        self._retention = retention
        self._tasks: dict[str, Task] = {}
        self._by_dedup: dict[str, str] = {}
        self._dedup_of: dict[str, str] = {}
        self._expires: dict[str, float] = {}
        # (expiry, task id): swept as tasks are added; a task saved since has a later expiry in `_expires`.
        self._expiry_heap: list[tuple[float, str]] = []
        self._queue: deque[str] = deque()
        self._queued = asyncio.Event()
        self._deliveries: list[tuple[float, str]] = []
        self._delivery_due: dict[str, float] = {}
        self._delivery_added = asyncio.Event()

    async def add(self, task: Task, dedup: str | None) -> Task:
        self._sweep()
        if dedup is not None:
            known = self._tasks.get(self._by_dedup.get(dedup, ""))
            if known is not None:
                return known
            self._by_dedup[dedup] = task.task_id
            self._dedup_of[task.task_id] = dedup
        self._tasks[task.task_id] = task
        self._keep(task.task_id, time.time())
        self._queue.append(task.task_id)
        self._queued.set()
        return task

    async def get(self, task_id: str) -> Task | None:
        if self._expires.get(task_id, 0.0) <= time.time():
            return None
        return self._tasks.get(task_id)

    async def save(self, task: Task) -> None:
        if finished(task):
            task.request = ModerateImageRequest()  # the image, no longer needed
        self._tasks[task.task_id] = task
        self._keep(task.task_id, max(time.time(), self._delivery_due.get(task.task_id, 0.0)))

    async def record_sent(self, task: Task, at: float) -> None:
        task.attempts_sent += 1
        task.sent_at = at

    async def take_work(self, wait: float) -> Task | None:
        if not self._queue:
            self._queued.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._queued.wait()
            except TimeoutError:
                return None
        if not self._queue:
            return None  # another worker took it
        return self._tasks.get(self._queue.popleft())

    async def renew_work(self, task: Task) -> bool:
        """Nothing to renew: a task taken here is never handed to another worker."""
        return True

    async def finish_work(self, task: Task) -> None:
        """Nothing to acknowledge: the task left the queue when it was taken."""

    async def schedule_delivery(self, task: Task, at: float) -> None:
        self._delivery_due[task.task_id] = at
        heapq.heappush(self._deliveries, (at, task.task_id))
        self._delivery_added.set()

    async def take_delivery(self, wait: float) -> Task | None:
        loop = asyncio.get_running_loop()
        until = loop.time() + wait
        while True:
            while self._deliveries and self._stale(self._deliveries[0]):
                heapq.heappop(self._deliveries)
            due_in = self._deliveries[0][0] - time.time() if self._deliveries else wait
            if self._deliveries and due_in <= 0:
                _, task_id = heapq.heappop(self._deliveries)
                del self._delivery_due[task_id]
                return self._tasks.get(task_id)
            left = until - loop.time()
            if left <= 0:
                return None
            self._delivery_added.clear()
            try:
                async with asyncio.timeout(min(left, due_in)):
                    await self._delivery_added.wait()
            except TimeoutError:
                pass

    async def finish_delivery(self, task: Task) -> None:
        self._delivery_due.pop(task.task_id, None)

    async def backlog(self) -> Backlog:
        oldest = next((self._tasks.get(t) for t in self._queue), None)
        age = time.time() - oldest.view.created_at.ToSeconds() if oldest is not None else 0.0
        return Backlog(len(self._queue), max(0.0, age))

    async def aclose(self) -> None:
        """Nothing to release."""

    def _stale(self, entry: tuple[float, str]) -> bool:
        """A delivery finished, or rescheduled since it was pushed."""
        at, task_id = entry
        return self._delivery_due.get(task_id) != at

    def _keep(self, task_id: str, from_time: float) -> None:
        expiry = from_time + self._retention
        self._expires[task_id] = expiry
        heapq.heappush(self._expiry_heap, (expiry, task_id))

    def _sweep(self) -> None:
        now = time.time()
        while self._expiry_heap and self._expiry_heap[0][0] <= now:
            expiry, task_id = heapq.heappop(self._expiry_heap)
            if self._expires.get(task_id) != expiry:
                continue  # saved since, with a later expiry
            self._tasks.pop(task_id, None)
            del self._expires[task_id]
            dedup = self._dedup_of.pop(task_id, None)
            if dedup is not None:
                del self._by_dedup[dedup]
