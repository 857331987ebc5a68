"""A call that begins waiting for its rate slot before the backend's first answer: whether its attempt
can finish is judged by the latency known when the slot comes, not the none known when it began."""

from __future__ import annotations

import asyncio

import pytest
from moderation.v1.moderation_service_pb2 import ModerateImageRequest

from backends.errors import Kind
from service.deadlines import Deadline
from service.errors import CallFailure
from service.governor import RateGovernor
from service.retry import Retrier, RetryPolicy
from tests.support.backends import ScriptedBackend

REQUEST = ModerateImageRequest(content=b"image")


async def test_a_slot_that_comes_after_the_first_answer_is_judged_by_that_answers_latency() -> None:
    backend = ScriptedBackend(0.2, 0.2)
    governor = RateGovernor(1, window=1.0)  # the second slot comes about 1 s after the first
    retrier = Retrier(backend, RetryPolicy(), governor=governor)
    try:
        first = asyncio.create_task(retrier.moderate(REQUEST, Deadline.for_call(5.0)))
        await asyncio.sleep(0)  # the first takes the slot; the second waits, knowing no latency yet
        with pytest.raises(CallFailure) as refused:
            await retrier.moderate(REQUEST, Deadline.for_call(1.15))
        await first
    finally:
        await governor.aclose()
    # The slot left ~0.1 s, less than the 0.2 s attempts take: not sent (it would have been billed for
    # a timeout), refused as out of rate budget.
    assert (refused.value.error.kind, refused.value.attempts, backend.calls) == (Kind.THROTTLED, 0, 1)
