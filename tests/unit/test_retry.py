"""The retry loop: which failures are retried, how long it sleeps, and when it stops."""

from __future__ import annotations

import asyncio

import pytest
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse, Suggestion

from backends.base import Fingerprint
from backends.errors import BackendError, Kind
from service.deadlines import Deadline
from service.errors import CallFailure
from service.governor import Priority, RateGovernor
from service.retry import Retrier, RetryPolicy

REQUEST = ModerateImageRequest(url="https://a.example/x.png")


class ScriptedBackend:
    """Answers each attempt from a script: an error to raise, or a delay before passing."""

    name = "scripted"
    fingerprint = Fingerprint.of("scripted")
    concurrency = None

    def __init__(self, *script: BackendError | float) -> None:
        self.script = list(script)
        self.calls = 0
        self.timeouts: list[float] = []

    async def moderate(self, request: ModerateImageRequest, *, timeout: float) -> ModerateImageResponse:
        self.calls += 1
        self.timeouts.append(timeout)
        step = self.script.pop(0) if self.script else 0.0
        if isinstance(step, BackendError):
            raise step
        await asyncio.sleep(step)
        return ModerateImageResponse(suggestion=Suggestion.SUGGESTION_PASS)

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class RecordingSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def transient() -> BackendError:
    return BackendError(
        Kind.UNAVAILABLE, "model call failed", upstream_code="ResourceUnavailable.ModelCallFailed"
    )


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
    subject = retrier(backend, sleep, jitter=0.0)
    await subject.moderate(REQUEST, Deadline.for_call(None))  # learns that attempts take ~50 ms
    with pytest.raises(CallFailure):
        await subject.moderate(REQUEST, Deadline.for_call(0.04))
    assert backend.calls == 2


async def test_each_attempt_gets_only_the_time_left_and_is_cut_off() -> None:
    backend, sleep = ScriptedBackend(5.0), RecordingSleep()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(CallFailure) as caught:
        await retrier(backend, sleep).moderate(REQUEST, Deadline.for_call(0.2))
    assert caught.value.error.kind is Kind.TIMEOUT
    assert "caller's deadline" in caught.value.error.message
    assert loop.time() - started < 0.3
    assert backend.timeouts[0] <= 0.2


async def test_backend_timeout_caps_a_caller_without_deadline() -> None:
    deadline = Deadline.for_call(None, cap=0.1)
    backend, sleep = ScriptedBackend(5.0), RecordingSleep()
    with pytest.raises(CallFailure) as caught:
        await retrier(backend, sleep).moderate(REQUEST, deadline)
    assert "backend timeout" in caught.value.error.message
    assert not deadline.set_by_caller


async def test_every_call_is_capped_at_the_15_second_service_timeout() -> None:
    loop = asyncio.get_running_loop()
    for time_remaining in (None, 60.0, 15.5):
        deadline = Deadline.for_call(time_remaining)
        assert deadline.expires_at - loop.time() == pytest.approx(15.0, abs=0.05)
        assert not deadline.set_by_caller
    shorter = Deadline.for_call(2.0)
    assert shorter.set_by_caller
    assert shorter.expires_at - loop.time() == pytest.approx(2.0 - 0.010, abs=0.05)
