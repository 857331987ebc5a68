"""Tasks in doubt, decided once (`service.tasks.doubt`): a task with a billed attempt recorded sent and no
outcome saved. The hook records each billed attempt before it is sent, refuses a task in doubt unless
resending is chosen, and sends nothing it could not record. Through the worker and a real retrier over a
backend that counts its calls: an in-doubt task fails ABORTED `TASK_OUTCOME_IN_DOUBT` without a call,
one the path answers without a call (the verdict cache) succeeds, and a backend that bills nothing is
never asked about."""

from __future__ import annotations

import time

import grpc
import pytest
from google.rpc import error_details_pb2
from moderation.v1.moderation_service_pb2 import (
    ModerateImageRequest,
    ModerateImageResponse,
    Suggestion,
    TaskState,
)
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from backends.base import Fingerprint
from backends.errors import BackendError, Kind
from backends.image_limits import IMS_IMAGE_LIMITS
from common.scrub import Scrubber
from service import errors
from service.deadlines import Deadline
from service.governor import Priority
from service.observe import Outcome
from service.retry import Retrier, RetryPolicy
from service.tasks.doubt import Sending, in_doubt
from service.tasks.memory import MemoryTaskStore
from service.tasks.metrics import TaskMetrics
from service.tasks.model import Task
from service.tasks.worker import TaskWorker
from tests.support.metrics import points
from tests.support.tasks import queued_task as task


def test_a_task_is_in_doubt_only_with_an_attempt_sent_and_no_outcome_saved() -> None:
    assert not in_doubt(task())
    assert in_doubt(task(sent=1))
    assert in_doubt(task(sent=2, state=TaskState.TASK_STATE_RUNNING))
    assert not in_doubt(task(sent=1, state=TaskState.TASK_STATE_SUCCEEDED))
    assert not in_doubt(task(sent=1, state=TaskState.TASK_STATE_FAILED))


async def test_each_billed_attempt_is_recorded_before_it_goes() -> None:
    store, fresh = MemoryTaskStore(60), task()
    sending = Sending(store, fresh, resend_in_doubt=False)
    before = time.time()
    await sending()
    await sending()
    assert fresh.attempts_sent == 2
    assert fresh.sent_at is not None
    assert fresh.sent_at >= before
    assert not sending.in_doubt


async def test_a_task_in_doubt_is_refused_saying_which_call_and_what_to_do() -> None:
    doubted = task(sent=1)
    sending = Sending(MemoryTaskStore(60), doubted, resend_in_doubt=False)
    with pytest.raises(BackendError) as refused:
        await sending()
    assert refused.value.kind is Kind.OUTCOME_IN_DOUBT
    assert "attempt 1, sent at 2026-11-30T00:53:20Z" in refused.value.message
    assert "new idempotency key" in refused.value.message
    assert doubted.attempts_sent == 1  # nothing recorded: nothing sent
    assert sending.ending == "not_sent"


async def test_a_task_in_doubt_is_sent_again_when_the_operator_chose_to_pay_twice() -> None:
    doubted = task(sent=1)
    sending = Sending(MemoryTaskStore(60), doubted, resend_in_doubt=True)
    await sending()
    assert doubted.attempts_sent == 2
    assert sending.ending == "sent_again"


class Unwritable(MemoryTaskStore):
    async def record_sent(self, task: Task, at: float) -> None:
        raise ConnectionError("Redis is away")


async def test_an_attempt_that_cannot_be_recorded_is_refused_as_throttled() -> None:
    sending = Sending(Unwritable(60), task(), resend_in_doubt=False)
    with pytest.raises(BackendError) as refused:
        await sending()
    assert refused.value.kind is Kind.THROTTLED
    assert refused.value.retry_after is not None
    assert sending.sent == 0


class CountingBackend:
    """Answers every attempt; counts them."""

    name = "counting"
    fingerprint = Fingerprint.of("counting")
    image_limits = IMS_IMAGE_LIMITS
    concurrency = None

    def __init__(self) -> None:
        self.calls = 0

    async def moderate(self, request: ModerateImageRequest, *, timeout: float) -> ModerateImageResponse:
        self.calls += 1
        return ModerateImageResponse(suggestion=Suggestion.SUGGESTION_PASS, data_id=request.data_id)

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class RetrierPath:
    """The servicer's path reduced to its retrier (or to a cached answer, which needs no call)."""

    def __init__(self, retrier: Retrier, cached: ModerateImageResponse | None = None) -> None:
        self._retrier = retrier
        self._cached = cached

    async def __call__(
        self, request: ModerateImageRequest, deadline: Deadline, priority: Priority
    ) -> Outcome:
        if self._cached is not None:
            return self._cached
        try:
            return await self._retrier.moderate(request, deadline, priority)
        except errors.CallFailure as failure:
            return failure


async def run(
    held: Task, path: RetrierPath, *, resend: bool = False, store: MemoryTaskStore | None = None
) -> InMemoryMetricReader:
    reader = InMemoryMetricReader()
    metrics = TaskMetrics(MeterProvider(metric_readers=[reader]).get_meter("test"))
    worker = TaskWorker(
        store or MemoryTaskStore(60),
        path,
        concurrency=1,
        backend_timeout=15.0,
        renew_every=1.0,
        tracer=trace.NoOpTracer(),
        on_state=metrics.state,
        on_doubt=metrics.in_doubt,
        resend_in_doubt=resend,
        outward=Scrubber(),
    )
    await worker.run(held)
    return reader


def billed_retrier(backend: CountingBackend, *, billed: bool = True) -> Retrier:
    return Retrier(backend, RetryPolicy(), billed=billed)


async def test_a_task_in_doubt_fails_aborted_without_a_call_and_is_counted() -> None:
    backend, doubted = CountingBackend(), task(sent=1, state=TaskState.TASK_STATE_RUNNING)
    reader = await run(doubted, RetrierPath(billed_retrier(backend)))
    assert backend.calls == 0
    assert doubted.view.state == TaskState.TASK_STATE_FAILED
    assert doubted.view.error.code == grpc.StatusCode.ABORTED.value[0]
    info = error_details_pb2.ErrorInfo()
    assert doubted.view.error.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("TASK_OUTCOME_IN_DOUBT", errors.DOMAIN)
    assert "may have been billed" in doubted.view.error.message
    assert points(reader, "moderation.task.in_doubt") == [({"moderation.outcome": "not_sent"}, 1)]


async def test_a_task_in_doubt_is_paid_again_when_resending_is_chosen() -> None:
    backend, doubted = CountingBackend(), task(sent=1)
    reader = await run(doubted, RetrierPath(billed_retrier(backend)), resend=True)
    assert backend.calls == 1
    assert doubted.view.state == TaskState.TASK_STATE_SUCCEEDED
    assert doubted.attempts_sent == 2
    assert points(reader, "moderation.task.in_doubt") == [({"moderation.outcome": "sent_again"}, 1)]


async def test_a_task_in_doubt_answered_without_a_call_succeeds() -> None:
    backend, doubted = CountingBackend(), task(sent=1)
    cached = ModerateImageResponse(suggestion=Suggestion.SUGGESTION_PASS, data_id="a")
    reader = await run(doubted, RetrierPath(billed_retrier(backend), cached))
    assert backend.calls == 0
    assert doubted.view.state == TaskState.TASK_STATE_SUCCEEDED
    assert points(reader, "moderation.task.in_doubt") == [({"moderation.outcome": "not_needed"}, 1)]


async def test_a_task_on_a_backend_that_bills_nothing_is_sent_unrecorded() -> None:
    backend, doubted = CountingBackend(), task(sent=1)
    await run(doubted, RetrierPath(billed_retrier(backend, billed=False)))
    assert backend.calls == 1
    assert doubted.attempts_sent == 1  # not recorded: nothing billed
    assert doubted.view.state == TaskState.TASK_STATE_SUCCEEDED


async def test_a_fresh_task_records_its_attempt_and_is_not_counted_in_doubt() -> None:
    backend, fresh = CountingBackend(), task()
    reader = await run(fresh, RetrierPath(billed_retrier(backend)))
    assert backend.calls == 1
    assert fresh.attempts_sent == 1
    assert points(reader, "moderation.task.in_doubt") == []
