"""One backend call under a deadline, retried only when the backend says retrying can help.

Full-jitter exponential backoff (as googleapis api-core does), each sleep capped by the time left.
No attempt, first or retry, is sent unless the time left after its rate slot covers the backend's
typical latency: an attempt that cannot finish is billed for nothing. Such a call fails without spending
quota (THROTTLED: RESOURCE_EXHAUSTED `RATE_BUDGET_EXHAUSTED` with RetryInfo), saying where its time went,
and `moderation.budget.refusals` counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse
from opentelemetry import trace

from backends.base import SECOND_REQUEST_SLOT, Backend
from backends.errors import BackendError, Kind
from common.scrub import CODE, REQUEST_ID, Scrubber
from service.deadlines import Deadline
from service.errors import KIND_POLICIES, CallFailure
from service.governor import Governor, Priority
from service.quotas.attempt import AttemptQuota
from service.quotas.guard import NOTHING_RESERVED
from service.telemetry import Metrics, Telemetry

# Set by whoever must know of each billed attempt before it is sent (an asynchronous task records it, or
# refuses it): awaited after the attempt's rate slot, and only by the retrier of a backend that bills. It
# raises `BackendError` to keep the attempt from being sent. Unset (None) for unary and stream calls.
BEFORE_BILLED_ATTEMPT: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar(
    "BEFORE_BILLED_ATTEMPT", default=None
)

# An attempt is sent only with this multiple of the backend's typical (mean) latency left: the mean
# alone would leave about half of the attempts sent on it to time out, billed.
FINISH_MARGIN = 1.25
# An attempt's span when tracing is off (a null context can be entered again and again).
_UNTRACED = contextlib.nullcontext(trace.INVALID_SPAN)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0

    def backoff_ceiling(self, retry_number: int) -> float:
        """The largest sleep before retry number `retry_number` (1 for the first retry)."""
        return min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry_number - 1))


class LatencyEstimate:
    """A moving average of successful attempts' durations; 0 until the first success."""

    def __init__(self, weight: float = 0.2) -> None:
        self._weight = weight
        self.seconds = 0.0

    def observe(self, seconds: float) -> None:
        self.seconds = (
            seconds if self.seconds == 0.0 else self.seconds + self._weight * (seconds - self.seconds)
        )


class Retrier:
    """Runs one request against one backend with the policy; one per backend (it learns its latency)."""

    def __init__(
        self,
        backend: Backend,
        policy: RetryPolicy,
        *,
        governor: Governor | None = None,
        quota: AttemptQuota | None = None,
        billed: bool = False,
        telemetry: Telemetry | None = None,
        jitter: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._backend = backend
        self._policy = policy
        self._governor = governor
        self._quota = quota
        # Its provider bills each attempt (`BEFORE_BILLED_ATTEMPT` is awaited before each).
        self._billed = billed
        telemetry = telemetry or Telemetry.off()
        self._tracer = telemetry.tracer
        self._tracing = telemetry.tracing
        self._metrics: Metrics = telemetry.metrics
        self._outward = telemetry.outward
        self._jitter = jitter
        self._sleep = sleep
        self.latency = LatencyEstimate()

    async def moderate(
        self,
        request: ModerateImageRequest,
        deadline: Deadline,
        priority: Priority = Priority.INTERACTIVE,
        *,
        max_attempts: int | None = None,
        shares: Sequence[Governor] = (),
    ) -> ModerateImageResponse:
        """`shares`: slices of the backend's budget (a route's, a caller's), taken before its own.

        Raises `CallFailure` with the last error seen and the attempts made.
        """
        loop = asyncio.get_running_loop()
        attempt = 0
        last_error: BackendError | None = None
        budget: float | None = None
        while True:
            try:
                # The caller's quota before the rate budget: a caller past a hard quota spends no slot.
                ticket = await self._quota.reserve(request) if self._quota is not None else NOTHING_RESERVED
            except BackendError as refused:
                raise self._failure(refused, attempt, budget) from None
            try:
                await self._slot_to_finish(priority, deadline, shares, first=attempt == 0)
                if self._billed and (before := BEFORE_BILLED_ATTEMPT.get()) is not None:
                    await before()
            except BackendError as refused:
                await ticket.release()
                # Out of time for a retry (or a retry's send refused by `BEFORE_BILLED_ATTEMPT`): the
                # failure that made us retry is the one to report.
                raise self._failure(last_error or refused, attempt, budget) from None
            except BaseException:
                await ticket.release()  # cancelled while waiting for its slot: nothing was sent
                raise
            attempt += 1
            started = loop.time()
            budget = deadline.remaining()
            # A second request inside this attempt (a resend after a revoked key) takes a slot too.
            resend = SECOND_REQUEST_SLOT.set(
                functools.partial(self._slot_to_finish, priority, deadline, shares, first=False)
            )
            try:
                result = await self._traced_attempt(request, deadline, attempt, last_error)
            except BackendError as error:
                last_error = error
                await AttemptQuota.settle(ticket, error)
                if error.kind is Kind.RATE_LIMITED and self._governor is not None:
                    self._governor.upstream_rate_limited(started)
                if not self._should_retry(error, attempt, max_attempts):
                    raise self._failure(error, attempt, budget) from error
                delay = self._delay_before_retry(error, attempt, deadline)
                if delay is None:
                    raise self._failure(error, attempt, budget) from error
                self._metrics.retries.add(
                    1,
                    {
                        "moderation.backend": self._backend.name,
                        "moderation.retry_reason": _reason(error, self._outward),
                    },
                )
                await self._sleep(delay)
                continue
            finally:
                SECOND_REQUEST_SLOT.reset(resend)
            self.latency.observe(loop.time() - started)
            result.attempts = attempt
            return result

    def _failure(self, error: BackendError, attempts: int, budget: float | None) -> CallFailure:
        return CallFailure(error, backend=self._backend.name, attempts=attempts, attempt_budget=budget)

    @property
    def time_to_finish(self) -> float:
        """The time an attempt needs left to be worth sending (0 until one has succeeded)."""
        return self.latency.seconds * FINISH_MARGIN

    async def _slot_to_finish(
        self, priority: Priority, deadline: Deadline, shares: Sequence[Governor], *, first: bool
    ) -> None:
        """A slot of every governor with the time to finish left after it; else BackendError(THROTTLED),
        nothing sent, counted in `moderation.budget.refusals`."""
        loop = asyncio.get_running_loop()
        needed = self.time_to_finish
        started = loop.time()
        retry_after: float | None = None
        try:
            await self._take_slot(priority, deadline.less(needed), shares, retry=not first)
        except BackendError as throttled:
            retry_after = throttled.retry_after
        waited = loop.time() - started
        left = deadline.remaining()
        # As known now: a call that waited from before the first answer would otherwise be sent with no
        # time left (the estimate was 0 when it began to wait), and billed for a timeout.
        needed = max(needed, self.time_to_finish)
        if retry_after is None and left > 0 and left >= needed:
            return
        raise self.not_sent(waited, left, retry_after, first=first)

    def not_sent(self, waited: float, left: float, retry_after: float | None, *, first: bool) -> BackendError:
        """Why no attempt is sent after waiting `waited` s for the rate budget (a governor's slot, or the
        intake's room) with `left` s left: THROTTLED, counted in `moderation.budget.refusals`."""
        self._metrics.budget_refusals.add(
            1, {"moderation.backend": self._backend.name, "moderation.attempt": "first" if first else "retry"}
        )
        # Capacity is expected once the queue that held this call has drained: about as long again.
        return _refused(
            waited, left, self.time_to_finish, retry_after if retry_after is not None else max(waited, 0.1)
        )

    async def _take_slot(
        self, priority: Priority, deadline: Deadline, shares: Sequence[Governor], *, retry: bool
    ) -> None:
        """Waits for a slot of every governor, a retry before its priority's first attempts when
        queuing behind them would miss its deadline (it waited once; the items read since could take
        all it has left); a sampled call's span gets the wait as an event."""
        governors = [*shares, *([self._governor] if self._governor is not None else [])]
        if not governors:
            return
        span = trace.get_current_span()
        started = asyncio.get_running_loop().time() if span.is_recording() else 0.0
        try:
            for governor in governors:
                await governor.acquire(priority, deadline, retry=retry)
        finally:
            if span.is_recording():
                waited = asyncio.get_running_loop().time() - started
                span.add_event(
                    "moderation.governor.wait",
                    {"moderation.priority": priority.value, "moderation.duration_s": waited},
                )

    async def _traced_attempt(
        self, request: ModerateImageRequest, deadline: Deadline, attempt: int, previous: BackendError | None
    ) -> ModerateImageResponse:
        """One attempt in a CLIENT span of its own; its attributes are computed only if it is sampled
        (a remote backend adds the HTTP request's)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = "ok"
        # Untraced, no span to start: the no-op tracer's costs 3 µs an attempt, for nothing.
        attempt_span = (
            self._tracer.start_as_current_span("moderation.backend.attempt", kind=trace.SpanKind.CLIENT)
            if self._tracing
            else _UNTRACED
        )
        with attempt_span as span:
            recording = span.is_recording()
            if recording:
                span.set_attributes(_attempt_attributes(self._backend.name, attempt, previous, self._outward))
            try:
                result = await self._attempt(request, deadline)
            except BackendError as error:
                outcome = error.kind.value
                if recording:
                    span.set_attributes(_error_attributes(error, self._outward))
                raise
            finally:
                self._metrics.attempt_duration.record(
                    loop.time() - started,
                    {"moderation.backend": self._backend.name, "moderation.outcome": outcome},
                )
            if recording:
                span.set_attribute(
                    "moderation.backend_request_id", self._outward.token(result.request_id, REQUEST_ID)
                )
            return result

    async def _attempt(self, request: ModerateImageRequest, deadline: Deadline) -> ModerateImageResponse:
        budget = deadline.remaining()
        if budget <= 0:
            raise _timeout(deadline)
        try:
            # Enforced here too, whatever the backend does with its `timeout`.
            async with asyncio.timeout(budget):
                return await self._backend.moderate(request, timeout=budget)
        except TimeoutError:
            raise _timeout(deadline) from None
        except BackendError as error:
            # A backend raises TIMEOUT when the `timeout` it was given runs out (`Backend.moderate`), and
            # that was this deadline's time left: whichever of the two timers fired first, it is this
            # deadline expiring, said as such (whose deadline it was is known here only).
            if error.kind is Kind.TIMEOUT:
                raise _timeout(deadline) from None
            raise

    def _should_retry(self, error: BackendError, attempt: int, max_attempts: int | None) -> bool:
        return KIND_POLICIES[error.kind].retried and attempt < (max_attempts or self._policy.max_attempts)

    def _delay_before_retry(self, error: BackendError, attempt: int, deadline: Deadline) -> float | None:
        """The sleep before the next attempt, or None when that attempt could not finish in time."""
        delay = self._jitter() * self._policy.backoff_ceiling(attempt)
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        if deadline.remaining() - delay <= self.time_to_finish:
            return None
        return delay


def _reason(error: BackendError, scrubber: Scrubber) -> str:
    """A metric label and span attribute: an upstream code only if it is one, holding no secret."""
    if error.upstream_code:
        return scrubber.token(error.upstream_code, CODE)
    return error.kind.value


def _attempt_attributes(
    backend: str, attempt: int, previous: BackendError | None, scrubber: Scrubber
) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {"moderation.backend": backend, "moderation.attempt": attempt}
    if previous is not None:
        attributes["moderation.retry_reason"] = _reason(previous, scrubber)
    return attributes


def _error_attributes(error: BackendError, scrubber: Scrubber) -> dict[str, str]:
    # `error.type`: the semantic conventions' name for why a client call failed.
    attributes = {"moderation.error.kind": error.kind.value, "error.type": error.kind.value}
    if error.upstream_code:
        attributes["moderation.upstream_code"] = _reason(error, scrubber)
    if error.request_id:
        attributes["moderation.backend_request_id"] = scrubber.token(error.request_id, REQUEST_ID)
    return attributes


def _refused(waited: float, left: float, needed: float, retry_after: float) -> BackendError:
    """Why no attempt was sent: where the call's time went, and when to come back."""
    typical = f"it typically needs {needed:.1f} s" if needed else "none could be sent in time"
    return BackendError(
        Kind.THROTTLED,
        f"not sent, nothing billed: waited {waited:.1f} s for the rate budget, "
        f"then {left:.1f} s were left and {typical}; retry in {retry_after:.1f} s",
        retry_after=retry_after,
    )


def _timeout(deadline: Deadline) -> BackendError:
    who = "the caller's deadline" if deadline.set_by_caller else "the backend timeout"
    return BackendError(Kind.TIMEOUT, f"no answer from the backend before {who} expired")
