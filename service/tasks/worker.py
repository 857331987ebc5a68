"""Runs tasks through the path every call takes (the servicer's `_moderate`: policy, fitting, cache,
routing, the governor at BACKGROUND priority, quotas), saves each outcome before acknowledging it, and
schedules its callback.

A task is held on a lease renewed every `renew_every` seconds while it is worked on, so only a task
whose replica died (or lost Redis for a whole lease) is taken over: a live replica's slow call or long
wait for budget is never run twice. A replica that finds its task taken over stops before its next call.

Each billed attempt is recorded on the task before it is sent, and a task taken over with an attempt
sent but no outcome saved (its replica died with the call in flight) is in doubt: `service.tasks.doubt`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from google.rpc import status_pb2
from moderation.v1.moderation_service_pb2 import (
    DeliveryState,
    ModerateImageRequest,
    ModerateImageResponse,
    TaskState,
)
from opentelemetry import trace

from backends.calls import CALLER
from backends.errors import Kind
from common.cancellation import end_if_cancelled
from common.scrub import Scrubber
from service import errors
from service.deadlines import Deadline
from service.governor import Priority
from service.logs import RateLimitedLog
from service.observe import Outcome
from service.retry import BEFORE_BILLED_ATTEMPT
from service.tasks import statuses
from service.tasks.doubt import Sending
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
        renew_every: float,
        tracer: trace.Tracer,
        on_state: Callable[[int], None],
        on_doubt: Callable[[str], None],
        resend_in_doubt: bool,
        outward: Scrubber,
    ) -> None:
        self._outward = outward
        self._on_doubt = on_doubt
        self._resend_in_doubt = resend_in_doubt
        self._store = store
        self._moderate = moderate
        self._backend_timeout = backend_timeout
        self._renew_every = renew_every
        self._unrenewed = RateLimitedLog(log, "a task's lease not renewed; trying again", interval=30.0)
        self._tracer = tracer
        self._on_state = on_state
        self._loops = Loops("task work", concurrency, store.take_work, self.run)
        # The tasks this replica is working on: one handed to it again (its lease ran out while Redis
        # was slow to answer) is left to the worker that has it.
        self._running: set[str] = set()

    def start(self) -> None:
        self._loops.start()

    async def drain(self, timeout: float) -> None:
        """Queued tasks are worked off within `timeout`; then the loops end (a fleet's tasks left are
        reclaimed by other replicas after their lease)."""
        await self._loops.drain(timeout)

    async def run(self, task: Task) -> None:
        if task.task_id in self._running:
            return
        self._running.add(task.task_id)
        try:
            async with self._held(task) as lost:
                await self._run(task, lost)
        finally:
            self._running.discard(task.task_id)

    async def _run(self, task: Task, lost: asyncio.Event) -> None:
        view = task.view
        if not finished(task):
            links = linked_to(task.traceparent)
            with self._tracer.start_as_current_span("moderation.task", links=links) as span:
                span.set_attribute("moderation.task_id", task.task_id)
                view.state = TaskState.TASK_STATE_RUNNING
                self._on_state(view.state)
                await self._store.save(task)
                outcome = await self._outcome(task, lost)
                if outcome is None:
                    return  # taken over by another replica, which runs it
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

    @contextlib.asynccontextmanager
    async def _held(self, task: Task) -> AsyncIterator[asyncio.Event]:
        """The task's lease renewed while inside; the event is set once another replica has taken it."""
        lost, done = asyncio.Event(), asyncio.Event()
        renewing = asyncio.create_task(self._renew(task, lost, done))
        try:
            yield lost
        finally:
            # Told, not only cancelled: redis-py can swallow the cancellation of a command in flight,
            # and a renewer that went on would keep this worker waiting here, and the task, for ever.
            done.set()
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)

    async def _renew(self, task: Task, lost: asyncio.Event, done: asyncio.Event) -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._renew_every):
                    await done.wait()
            if done.is_set():
                return
            try:
                if not await self._store.renew_work(task):
                    lost.set()
                    return
            except Exception as problem:
                end_if_cancelled()
                self._unrenewed.record(error=type(problem).__name__)

    async def _outcome(
        self, task: Task, lost: asyncio.Event
    ) -> ModerateImageResponse | status_pb2.Status | None:
        """The result, or the error status; None: another replica took the task over before this one's
        next call. Each billed attempt is recorded on the task before it is sent (or refused, in doubt)."""
        sending = Sending(self._store, task, resend_in_doubt=self._resend_in_doubt)
        announced = BEFORE_BILLED_ATTEMPT.set(sending)
        try:
            outcome = await self._asked(task, lost)
        finally:
            BEFORE_BILLED_ATTEMPT.reset(announced)
        if sending.in_doubt and outcome is not None:
            log.warning(
                "task taken over in doubt: its replica stopped with a billed call in flight",
                extra={"fields": {"task_id": task.task_id, "ending": sending.ending}},
            )
            self._on_doubt(sending.ending)
        return outcome

    async def _asked(
        self, task: Task, lost: asyncio.Event
    ) -> ModerateImageResponse | status_pb2.Status | None:
        """`_outcome`'s: a task the budget has no slot for yet waits and asks again, until its own
        deadline."""
        # As its submitter's own call would: its quotas, its share of the budget, its label.
        CALLER.set(task.submitted_by)
        while not lost.is_set():
            remaining = task.deadline - time.time()
            if remaining <= 0:
                return statuses.deadline_passed()
            deadline = Deadline.for_call(remaining, cap=self._backend_timeout)
            outcome = await self._moderate(task.request, deadline, Priority.BACKGROUND)
            if isinstance(outcome, ModerateImageResponse):
                return outcome
            if not (isinstance(outcome, errors.CallFailure) and outcome.error.kind is Kind.THROTTLED):
                return errors.failure_status(outcome, self._outward)
            pause = outcome.error.retry_after or THROTTLED_PAUSE
            await asyncio.sleep(min(pause, max(0.0, task.deadline - time.time())))
        return None
