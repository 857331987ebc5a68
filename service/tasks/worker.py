"""Runs tasks through the path every call takes (the servicer's `_moderate`: policy, fitting, cache,
routing, the governor at BACKGROUND priority, quotas), saves each outcome before acknowledging it, and
schedules its callback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from google.rpc import status_pb2
from moderation.v1.moderation_service_pb2 import (
    DeliveryState,
    ModerateImageRequest,
    ModerateImageResponse,
    TaskState,
)
from opentelemetry import trace

from backends.errors import Kind
from common.scrub import Scrubber
from service import errors
from service.deadlines import Deadline
from service.governor import Priority
from service.observe import Outcome
from service.tasks import statuses
from service.tasks.loops import Loops
from service.tasks.model import Task, TaskStore, finished
from service.tasks.tracing import linked_to

__all__ = ["Moderate", "TaskWorker"]

log = logging.getLogger(__name__)

Moderate = Callable[[ModerateImageRequest, Deadline, Priority], Awaitable[Outcome]]
# A task the budget had no slot for waits this long (or its Retry-After) before asking again.
THROTTLED_PAUSE = 0.5


class TaskWorker:
    def __init__(
        self,
        store: TaskStore,
        moderate: Moderate,
        *,
        concurrency: int,
        backend_timeout: float,
        tracer: trace.Tracer,
        on_state: Callable[[int], None],
        outward: Scrubber,
    ) -> None:
        self._outward = outward
        self._store = store
        self._moderate = moderate
        self._backend_timeout = backend_timeout
        self._tracer = tracer
        self._on_state = on_state
        self._loops = Loops("task work", concurrency, store.take_work, self.run)

    def start(self) -> None:
        self._loops.start()

    async def drain(self, timeout: float) -> None:
        """Queued tasks are worked off within `timeout`; then the loops end (a fleet's tasks left are
        reclaimed by other replicas after their lease)."""
        await self._loops.drain(timeout)

    async def run(self, task: Task) -> None:
        view = task.view
        if not finished(task):
            links = linked_to(task.traceparent)
            with self._tracer.start_as_current_span("moderation.task", links=links) as span:
                span.set_attribute("moderation.task_id", task.task_id)
                view.state = TaskState.TASK_STATE_RUNNING
                self._on_state(view.state)
                await self._store.save(task)
                outcome = await self._outcome(task)
                if isinstance(outcome, ModerateImageResponse):
                    view.result.CopyFrom(outcome)
                    view.state = TaskState.TASK_STATE_SUCCEEDED
                else:
                    view.error.CopyFrom(outcome)
                    view.state = TaskState.TASK_STATE_FAILED
                view.finished_at.GetCurrentTime()
                if task.callback_url:
                    view.delivery.state = DeliveryState.DELIVERY_STATE_PENDING
                self._on_state(view.state)
                # Saved before acknowledged: a replica that takes this task over does not pay again.
                await self._store.save(task)
        if task.callback_url and view.delivery.attempts == 0:
            await self._store.schedule_delivery(task, time.time())
        await self._store.finish_work(task)

    async def _outcome(self, task: Task) -> ModerateImageResponse | status_pb2.Status:
        """The result, or the error status; a task the budget has no slot for yet waits and asks again,
        until its own deadline."""
        while True:
            remaining = task.deadline - time.time()
            if remaining <= 0:
                return statuses.deadline_passed()
            deadline = Deadline.for_call(remaining, cap=self._backend_timeout)
            outcome = await self._moderate(task.request, deadline, Priority.BACKGROUND)
            if isinstance(outcome, ModerateImageResponse):
                return outcome
            if not (isinstance(outcome, errors.CallFailure) and outcome.error.kind is Kind.THROTTLED):
                return errors.failure_status(outcome, self._outward)
            await self._store.renew_work(task)
            pause = outcome.error.retry_after or THROTTLED_PAUSE
            await asyncio.sleep(min(pause, max(0.0, task.deadline - time.time())))
