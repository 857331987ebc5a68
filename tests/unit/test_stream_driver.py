"""The one stream driver of the tests and benches: lazy items, the client's window, answers and the
call's end handed back. The call here is a fake that answers each item it reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator

import grpc
from moderation.v1.moderation_service_pb2 import StreamModerateImagesRequest, StreamModerateImagesResponse

from testbed.stream import drive_stream


class EchoCall:
    """Reads items as far ahead as the client sends them and answers each with its index, twice for
    `twice`; then ends with `error`, if any."""

    def __init__(self, *, twice: frozenset[int] = frozenset(), error: grpc.aio.AioRpcError | None = None):
        self.twice, self.error = twice, error
        self.kwargs: dict[str, object] = {}

    def __call__(
        self, requests: AsyncIterable[StreamModerateImagesRequest], **kwargs: object
    ) -> AsyncIterator[StreamModerateImagesResponse]:
        self.kwargs = kwargs
        return self._answers(requests)

    async def _answers(
        self, requests: AsyncIterable[StreamModerateImagesRequest]
    ) -> AsyncIterator[StreamModerateImagesResponse]:
        read: asyncio.Queue[StreamModerateImagesRequest | None] = asyncio.Queue()

        async def read_ahead() -> None:
            async for request in requests:
                await read.put(request)
            await read.put(None)

        reader = asyncio.create_task(read_ahead())
        index = 0
        while (request := await read.get()) is not None:
            for _ in range(2 if index in self.twice else 1):
                yield StreamModerateImagesResponse(index=index, correlation_id=request.correlation_id)
            index += 1
        await reader
        if self.error is not None:
            raise self.error


def item(index: int) -> StreamModerateImagesRequest:
    return StreamModerateImagesRequest(correlation_id=f"c{index}")


async def test_every_item_is_sent_lazily_and_every_answer_handed_back_in_order() -> None:
    call, sent, answers = EchoCall(), list[int](), list[tuple[int, str]]()
    error = await drive_stream(
        call,
        item,
        5,
        lambda answer, now: answers.append((answer.index, answer.correlation_id)),
        timeout=7,
        metadata=(("authorization", "Bearer t"),),
        on_sent=lambda index, at: sent.append(index),
    )
    assert error is None
    assert sent == [0, 1, 2, 3, 4]
    assert answers == [(i, f"c{i}") for i in range(5)]
    assert call.kwargs == {"timeout": 7, "metadata": (("authorization", "Bearer t"),)}


async def test_a_window_frees_a_place_only_at_an_items_first_answer() -> None:
    # A window of one and a duplicate answer to item 0: had the duplicate freed a place too, the call
    # reading ahead would get items 1 and 2 before answering 1.
    in_flight: list[int] = []
    sent: set[int] = set()
    answered: set[int] = set()

    def record(answer: StreamModerateImagesResponse, now: float) -> None:
        answered.add(answer.index)

    def on_sent(index: int, at: float) -> None:
        sent.add(index)
        in_flight.append(len(sent - answered))

    error = await drive_stream(
        EchoCall(twice=frozenset({0})), item, 4, record, timeout=5, window=1, on_sent=on_sent
    )
    assert error is None
    assert max(in_flight) == 1
    assert answered == {0, 1, 2, 3}


async def test_the_error_that_ended_the_call_is_returned() -> None:
    ended = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "gone"
    )
    answers: list[int] = []
    error = await drive_stream(
        EchoCall(error=ended), item, 2, lambda answer, now: answers.append(answer.index), timeout=5
    )
    assert error is ended
    assert answers == [0, 1]
