"""One `StreamModerateImages` call, and what became of every item sent on it: `drive_stream` is the one
driver (items built lazily, an optional window of unanswered items, each answer and the call's end
handed back); `run_stream` records a StreamResult over it."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import StreamModerateImagesRequest, StreamModerateImagesResponse

from testbed.client import RATE_LIMITED, Metadata, error_label, request
from testbed.processes import BUDGET_QPS

# Generous, so only a hung gateway hits it: the stream should take items / BUDGET_QPS seconds.
STREAM_TIMEOUT_MARGIN = 120.0


@dataclass
class StreamResult:
    sent: int = 0
    answered: int = 0
    results: int = 0
    # Per-item errors by `CODE/REASON`.
    errors: Counter[str] = field(default_factory=Counter)
    # Answers per index; exactly-once means every index 0..sent-1 appears once.
    answers: Counter[int] = field(default_factory=Counter)
    # Answers whose correlation id is not the one sent at their index.
    misattributed: int = 0
    # Backend attempts beyond the first, summed over the results: retries inside the gateway.
    upstream_retries: int = 0
    # Loop times: the call started, its first and its last answer.
    started: float = 0.0
    first_answer: float = 0.0
    last_answer: float = 0.0
    # Loop time of every result, in order: a share of the budget over any window.
    result_times: list[float] = field(default_factory=list)
    # The status that ended the call, when not OK.
    call_error: str | None = None

    @property
    def rate_limited(self) -> int:
        """Items the client got RequestLimitExceeded for (the gateway's every attempt was refused)."""
        return self.errors[RATE_LIMITED]

    @property
    def answered_once(self) -> int:
        return sum(1 for index, count in self.answers.items() if count == 1 and 0 <= index < self.sent)

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.answers.values() if count > 1)

    @property
    def missing(self) -> int:
        return sum(1 for index in range(self.sent) if index not in self.answers)

    @property
    def wall_throughput(self) -> float:
        """Results per second from the first request sent to the last answer: what a caller waits."""
        return self.results / (self.last_answer - self.started) if self.results else 0.0

    @property
    def steady_throughput(self) -> float:
        """Results per second between the first and the last answer, leaving out the first latency."""
        span = self.last_answer - self.first_answer
        return (self.results - 1) / span if self.results > 1 and span > 0 else 0.0


def _correlation_id(index: int) -> str:
    return f"item-{index}"


# The call as a stub's or a channel's method gives it: requests in, answers out.
StreamMethod = Callable[..., AsyncIterable[StreamModerateImagesResponse]]


async def drive_stream(
    method: StreamMethod,
    item: Callable[[int], StreamModerateImagesRequest],
    count: int,
    on_answer: Callable[[StreamModerateImagesResponse, float], None],
    *,
    timeout: float,
    window: int | None = None,
    metadata: Metadata = (),
    on_sent: Callable[[int, float], None] = lambda index, at: None,
) -> grpc.aio.AioRpcError | None:
    """Sends `item(0)`..`item(count - 1)`, each built as gRPC flow control lets it through, and hands
    every answer to `on_answer` with its loop time; returns the error that ended the call, if any. With a
    `window`, at most that many items are sent and not yet answered (an item's first answer frees its
    place); otherwise the gateway reads as far ahead as its own stream window lets it."""
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(window) if window is not None else None
    sent = 0
    answered: set[int] = set()

    async def requests() -> AsyncIterator[StreamModerateImagesRequest]:
        nonlocal sent
        for index in range(count):
            if slots is not None:
                await slots.acquire()
            message = item(index)
            on_sent(index, loop.time())
            sent += 1
            yield message

    try:
        async for answer in method(requests(), timeout=timeout, metadata=metadata):
            if slots is not None and 0 <= answer.index < sent and answer.index not in answered:
                slots.release()
            answered.add(answer.index)
            on_answer(answer, loop.time())
    except grpc.aio.AioRpcError as error:
        return error
    return None


async def run_stream(
    stub: moderation_service_pb2_grpc.ModerationServiceStub,
    images: Sequence[bytes],
    count: int,
    *,
    steady: asyncio.Event | None = None,
    steady_after: int = 0,
    window: int | None = None,
    metadata: Metadata = (),
) -> StreamResult:
    """Streams `count` items, cycling through `images`; sets `steady` once `steady_after` items are
    answered. `window` as `drive_stream` says. `metadata` goes with the call (a caller's
    `authorization`)."""
    outcome = StreamResult()

    def item(index: int) -> StreamModerateImagesRequest:
        image = images[index % len(images)]
        return StreamModerateImagesRequest(
            correlation_id=_correlation_id(index), request=request(image, f"bench-{index}")
        )

    def sent(index: int, at: float) -> None:
        outcome.sent += 1

    def record(answer: StreamModerateImagesResponse, now: float) -> None:
        outcome.first_answer = outcome.first_answer or now
        outcome.last_answer = now
        outcome.answered += 1
        outcome.answers[answer.index] += 1
        if answer.correlation_id != _correlation_id(answer.index):
            outcome.misattributed += 1
        if answer.HasField("result"):
            outcome.results += 1
            outcome.result_times.append(now)
            outcome.upstream_retries += max(0, answer.result.attempts - 1)
        else:
            outcome.errors[error_label(answer.error)] += 1
        if steady is not None and outcome.answered >= steady_after:
            steady.set()

    outcome.started = asyncio.get_running_loop().time()
    try:
        error = await drive_stream(
            stub.StreamModerateImages,
            item,
            count,
            record,
            timeout=count / BUDGET_QPS + STREAM_TIMEOUT_MARGIN,
            window=window,
            metadata=metadata,
            on_sent=sent,
        )
    finally:
        # A stream that ends early must not leave a waiter on `steady` hanging.
        if steady is not None:
            steady.set()
    if error is not None:
        outcome.call_error = f"{error.code().name}: {error.details()}"
    return outcome
