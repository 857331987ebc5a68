"""Delivers each finished task's callback per Standard Webhooks: signed, retried on a schedule with
jitter, stopped by 410, never redirected; the delivery record kept in the task."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence

from google.protobuf import json_format
from moderation.v1.moderation_service_pb2 import DeliveryState, ModerationTask, TaskState
from opentelemetry import trace

from service.tasks.callers import CallbackPolicies
from service.tasks.egress import Answer
from service.tasks.loops import Loops
from service.tasks.model import Task, TaskStore
from service.tasks.tracing import linked_to

__all__ = ["DEFAULT_SCHEDULE", "Deliverer", "callback_body", "next_delay"]

log = logging.getLogger(__name__)

# Seconds before each attempt, counted from the one before (the first: at once), as Standard Webhooks
# suggests: about three days in all.
DEFAULT_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0)
# Each wait is spread by up to this fraction either way, so receivers coming back are not hit at once.
JITTER = 0.1
# A receiver's Retry-After is honoured up to the longest wait of the schedule.
MAX_RETRY_AFTER = 86400.0
GONE = 410


def callback_body(view: ModerationTask) -> bytes:
    """`{type, timestamp, data}`: the data is the result, or the error, as proto JSON with zero values."""
    succeeded = view.state == TaskState.TASK_STATE_SUCCEEDED
    outcome = view.result if succeeded else view.error
    body = {
        "type": "moderation.task.succeeded" if succeeded else "moderation.task.failed",
        "timestamp": view.finished_at.ToJsonString(),
        "data": json_format.MessageToDict(outcome, always_print_fields_with_no_presence=True),
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def next_delay(
    attempts: int, schedule: Sequence[float], retry_after: float | None, rng: random.Random
) -> float | None:
    """Seconds until the attempt after `attempts` ones, or None when the schedule is spent."""
    if attempts >= len(schedule):
        return None
    delay = schedule[attempts] * rng.uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


def outcome_label(answer: Answer) -> str:
    """The `outcome` label of a delivery attempt."""
    if 200 <= answer.status < 300:
        return "delivered"
    if answer.status == GONE:
        return "gone"
    if answer.status:
        return f"http_{answer.status // 100}xx"
    return "refused" if answer.error.startswith("refused") else "no_answer"


class Deliverer:
    def __init__(
        self,
        store: TaskStore,
        policies: CallbackPolicies,
        *,
        schedule: Sequence[float] = DEFAULT_SCHEDULE,
        concurrency: int,
        tracer: trace.Tracer,
        on_attempt: Callable[[str], None],
    ) -> None:
        self._store = store
        self._policies = policies
        self._schedule = tuple(schedule)
        self._on_attempt = on_attempt
        self._rng = random.Random()
        self._tracer = tracer
        self._loops = Loops("callback delivery", concurrency, store.take_delivery, self.attempt)

    def start(self) -> None:
        self._loops.start()

    async def drain(self, timeout: float) -> None:
        """Deliveries due now are attempted within `timeout`; later ones wait in the store."""
        await self._loops.drain(timeout)
        await self._policies.aclose()

    async def attempt(self, task: Task) -> None:
        """One attempt of the task's callback, and its record: delivered, stopped, retried or given up."""
        view = task.view
        delivery = view.delivery
        body = callback_body(view)
        with self._tracer.start_as_current_span(
            "moderation.task.callback", links=linked_to(task.traceparent)
        ) as span:
            span.set_attribute("moderation.task_id", task.task_id)
            span.set_attribute("moderation.callback.attempt", delivery.attempts + 1)
            headers = (
                self._policies.secrets(task.caller).current().headers(task.task_id, int(time.time()), body)
            )
            answer = await self._policies.egress(task.caller).post(task.callback_url, headers, body)
            span.set_attribute("moderation.callback.status", answer.status)
        outcome = outcome_label(answer)
        self._on_attempt(outcome)
        delivery.attempts += 1
        delivery.last_http_status = answer.status
        delivery.last_error = answer.error
        delivery.ClearField("next_attempt_at")
        delay = None
        if outcome == "delivered":
            delivery.state = DeliveryState.DELIVERY_STATE_DELIVERED
        elif outcome == "gone":
            delivery.state = DeliveryState.DELIVERY_STATE_STOPPED
        elif outcome != "refused":
            delay = next_delay(delivery.attempts, self._schedule, answer.retry_after, self._rng)
        if delay is None and delivery.state == DeliveryState.DELIVERY_STATE_PENDING:
            delivery.state = DeliveryState.DELIVERY_STATE_GAVE_UP
        if delay is not None:
            at = time.time() + delay
            delivery.next_attempt_at.FromNanoseconds(int(at * 1e9))
            await self._store.save(task)
            await self._store.schedule_delivery(task, at)
        else:
            await self._store.save(task)
            await self._store.finish_delivery(task)
