"""The retry loop: which failures are retried, how long it sleeps, and when it stops."""

from __future__ import annotations

import asyncio

import pytest
from moderation.v1.moderation_service_pb2 import ModerateImageRequest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from backends.errors import BackendError, Kind
from service.deadlines import Deadline
from service.errors import CallFailure
from service.governor import Priority, RateGovernor
from service.retry import Retrier, RetryPolicy
from service.telemetry import Metrics, Telemetry
from tests.support.backends import ScriptedBackend
from tests.support.metrics import points

REQUEST = ModerateImageRequest(url="https://a.example/x.png")


class RecordingSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def transient() -> BackendError:
    return BackendError(
        Kind.UNAVAILABLE, "model call failed", upstream_code="ResourceUnavailable.ModelCallFailed"
    )


def refusals(reader: InMemoryMetricReader) -> dict[tuple[object, object], object]:
    """`moderation.budget.refusals` by (backend, attempt)."""
    return {
        (attributes["moderation.backend"], attributes["moderation.attempt"]): value
        for attributes, value in points(reader, "moderation.budget.refusals")
    }


def retrier(
    backend: ScriptedBackend, sleep: RecordingSleep, attempts: int = 3, jitter: float = 1.0
) -> Retrier:
    return Retrier(backend, RetryPolicy(max_attempts=attempts), jitter=lambda: jitter, sleep=sleep)


async def test_transient_failures_are_retried_with_growing_capped_backoff() -> None:
    backend, sleep = ScriptedBackend(transient(), transient()), RecordingSleep()
    result = await retrier(backend, sleep).moderate(REQUEST, Deadline.for_call(None))
    assert (result.attempts, backend.calls) == (3, 3)
    assert sleep.delays == [0.1, 0.2]


async def test_full_jitter_draws_below_the_ceiling() -> None:
    backend, sleep = ScriptedBackend(transient()), RecordingSleep()
    await retrier(backend, sleep, jitter=0.25).moderate(REQUEST, Deadline.for_call(None))
    assert sleep.delays == [pytest.approx(0.025)]


@pytest.mark.parametrize(
    "kind",
    [
        Kind.INVALID_REQUEST,
        Kind.MISCONFIGURED,
        Kind.ACCOUNT_UNAVAILABLE,
        Kind.QUOTA_EXHAUSTED,
        Kind.IMAGE_DOWNLOAD_FAILED,
        Kind.FAILED,
        Kind.TIMEOUT,
    ],
)
async def test_permanent_failures_are_never_retried(kind: Kind) -> None:
    backend, sleep = ScriptedBackend(BackendError(kind, "no")), RecordingSleep()
    with pytest.raises(CallFailure) as caught:
        await retrier(backend, sleep).moderate(REQUEST, Deadline.for_call(None))
    assert (backend.calls, caught.value.attempts) == (1, 1)


async def test_attempts_are_capped() -> None:
    backend, sleep = ScriptedBackend(*[transient()] * 5), RecordingSleep()
    with pytest.raises(CallFailure) as caught:
        await retrier(backend, sleep, attempts=2).moderate(REQUEST, Deadline.for_call(None))
    assert (backend.calls, caught.value.attempts) == (2, 2)


async def test_the_failure_carries_the_last_error_untouched_with_backend_and_attempts() -> None:
    first, last = transient(), BackendError(Kind.UNAVAILABLE, "still down", upstream_code="InternalError")
    backend, sleep = ScriptedBackend(first, last), RecordingSleep()
    with pytest.raises(CallFailure) as caught:
        await retrier(backend, sleep, attempts=2).moderate(REQUEST, Deadline.for_call(None))
    assert caught.value.error is last
    assert (caught.value.backend, caught.value.attempts) == ("scripted", 2)
    assert vars(last) == vars(BackendError(Kind.UNAVAILABLE, "still down", upstream_code="InternalError"))


async def test_a_retry_that_gets_no_rate_slot_reports_the_failure_that_made_it_retry() -> None:
    governor = RateGovernor(1, window=1.0)  # the first attempt takes the only slot of the second
    backend, sleep = ScriptedBackend(transient()), RecordingSleep()
    subject = Retrier(backend, RetryPolicy(), governor=governor, jitter=lambda: 0.0, sleep=sleep)
    try:
        with pytest.raises(CallFailure) as caught:
            await subject.moderate(REQUEST, Deadline.for_call(0.5))
    finally:
        await governor.aclose()
    assert (caught.value.error.kind, caught.value.error.message) == (Kind.UNAVAILABLE, "model call failed")
    assert (caught.value.attempts, backend.calls) == (1, 1)


async def test_a_retry_goes_before_the_items_that_queued_for_slots_while_its_first_attempt_was_out() -> None:
    governor = RateGovernor(10, window=1.0)  # a slot every 0.1 s
    queued: list[asyncio.Task[None]] = []

    async def others_queue_meanwhile(delay: float) -> None:
        # Between the refusal and the retry, 20 items queue: 2 s of slots, where the call has 0.5 s.
        queued.extend(
            asyncio.create_task(governor.acquire(Priority.BATCH, Deadline.for_call(None))) for _ in range(20)
        )
        await asyncio.sleep(0)

    backend = ScriptedBackend(
        BackendError(Kind.RATE_LIMITED, "the backend's limit", upstream_code="RequestLimitExceeded")
    )
    subject = Retrier(
        backend, RetryPolicy(), governor=governor, jitter=lambda: 0.0, sleep=others_queue_meanwhile
    )
    try:
        result = await subject.moderate(REQUEST, Deadline.for_call(0.5), Priority.BATCH)
        assert (result.attempts, backend.calls) == (2, 2)
        assert not any(task.done() for task in queued)
    finally:
        for task in queued:
            task.cancel()
        await governor.aclose()


async def test_a_call_that_gets_no_first_rate_slot_made_no_attempt() -> None:
    governor = RateGovernor(1, window=1.0)
    await governor.acquire(Priority.INTERACTIVE, Deadline.for_call(None))
    backend, sleep = ScriptedBackend(), RecordingSleep()
    subject = Retrier(backend, RetryPolicy(), governor=governor, sleep=sleep)
    try:
        with pytest.raises(CallFailure) as caught:
            await subject.moderate(REQUEST, Deadline.for_call(0.3))
    finally:
        await governor.aclose()
    assert (caught.value.error.kind, caught.value.attempts, backend.calls) == (Kind.THROTTLED, 0, 0)


async def test_retry_after_is_honoured() -> None:
    limited = BackendError(Kind.RATE_LIMITED, "slow down", retry_after=0.5)
    backend, sleep = ScriptedBackend(limited), RecordingSleep()
    await retrier(backend, sleep, jitter=0.0).moderate(REQUEST, Deadline.for_call(None))
    assert sleep.delays == [0.5]


async def test_no_retry_starts_that_cannot_finish_in_time() -> None:
    backend, sleep = ScriptedBackend(0.05, transient()), RecordingSleep()
    subject = retrier(backend, sleep, jitter=1.0)
    await subject.moderate(REQUEST, Deadline.for_call(None))  # learns that attempts take ~50 ms
    with pytest.raises(CallFailure) as caught:
        await subject.moderate(REQUEST, Deadline.for_call(0.15))
    # The retry would come after a 0.1 s backoff, with less left than an attempt takes.
    assert backend.calls == 2
    assert (caught.value.error.kind, caught.value.attempts) == (Kind.UNAVAILABLE, 1)


async def test_no_first_attempt_is_sent_without_the_time_a_typical_attempt_takes() -> None:
    backend, sleep = ScriptedBackend(0.05), RecordingSleep()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry = Telemetry(trace.NoOpTracerProvider(), provider, Metrics(provider.get_meter("test")))
    subject = Retrier(backend, RetryPolicy(), telemetry=telemetry, sleep=sleep)
    await subject.moderate(REQUEST, Deadline.for_call(None))  # learns that attempts take ~50 ms
    with pytest.raises(CallFailure) as caught:
        await subject.moderate(REQUEST, Deadline.for_call(0.04))
    assert backend.calls == 1
    assert refusals(reader) == {("scripted", "first"): 1}
    refusal = caught.value.error
    assert (refusal.kind, caught.value.attempts) == (Kind.THROTTLED, 0)
    assert "waited 0.0 s for the rate budget" in refusal.message
    assert "nothing billed" in refusal.message
    assert refusal.retry_after is not None
    assert refusal.retry_after > 0


async def test_a_call_whose_slot_would_come_too_late_to_finish_is_refused_at_once() -> None:
    governor = RateGovernor(2, window=1.0)
    backend, sleep = ScriptedBackend(0.3, 0.3), RecordingSleep()
    subject = Retrier(backend, RetryPolicy(), governor=governor, sleep=sleep)
    loop = asyncio.get_running_loop()
    try:
        await subject.moderate(REQUEST, Deadline.for_call(None))  # learns that attempts take ~300 ms
        await governor.acquire(Priority.INTERACTIVE, Deadline.for_call(None))
        # The next slot is ~0.5 s away: 0.7 s would leave ~0.2 s, under the 0.3 s an attempt takes.
        started = loop.time()
        with pytest.raises(CallFailure) as caught:
            await subject.moderate(REQUEST, Deadline.for_call(0.7))
    finally:
        await governor.aclose()
    assert loop.time() - started < 0.1
    assert backend.calls == 1
    assert (caught.value.error.kind, caught.value.attempts) == (Kind.THROTTLED, 0)
    assert caught.value.error.retry_after == pytest.approx(0.5, abs=0.1)
