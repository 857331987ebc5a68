"""The streaming RPCs end to end: one answer per item, bounded read-ahead, cancellation, rate limits."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import grpc
import pytest
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import (
    BatchModerateImagesRequest,
    ModerateImageRequest,
    StreamModerateImagesRequest,
    StreamModerateImagesResponse,
    Suggestion,
)

from emulator import ImsEmulator
from emulator.images import make_png
from service.server import Gateway
from tests.support.budget import within_the_learning_allowance
from tests.support.eventually import eventually
from tests.support.gateway import GatewayFactory, open_channel
from tests.support.richstatus import rich_error

Stub = moderation_service_pb2_grpc.ModerationServiceStub
PASS = make_png(256, 256)
BLOCK = make_png(256, 256, marker="IMSEMU:Block:Porn:SexBehavior:97")
TINY = b"far too small"


def items(contents: Iterable[bytes], prefix: str = "item") -> list[StreamModerateImagesRequest]:
    return [
        StreamModerateImagesRequest(
            correlation_id=f"{prefix}-{i}", request=ModerateImageRequest(content=content)
        )
        for i, content in enumerate(contents)
    ]


async def stream_all(
    stub: Stub, requests: list[StreamModerateImagesRequest], **kwargs: float
) -> list[StreamModerateImagesResponse]:
    return [answer async for answer in stub.StreamModerateImages(iter(requests), **kwargs)]


async def test_every_item_is_answered_once_with_its_correlation_id(stub: Stub) -> None:
    answers = await stream_all(stub, items([PASS, BLOCK] * 10))
    assert sorted(a.index for a in answers) == list(range(20))
    for answer in answers:
        assert answer.correlation_id == f"item-{answer.index}"
        assert answer.WhichOneof("outcome") == "result"
        expected = Suggestion.SUGGESTION_PASS if answer.index % 2 == 0 else Suggestion.SUGGESTION_BLOCK
        assert answer.result.suggestion == expected


async def test_bad_items_get_their_own_status_and_the_stream_goes_on(
    stub: Stub, emulator: ImsEmulator
) -> None:
    answers = await stream_all(stub, items([PASS, TINY, PASS, b"", BLOCK]))
    by_index = {a.index: a for a in answers}
    assert len(answers) == 5
    assert by_index[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "16" in by_index[1].error.message
    assert by_index[3].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert by_index[4].result.suggestion == Suggestion.SUGGESTION_BLOCK
    assert emulator.stats.billed == 3


async def test_batch_answers_with_indexes(stub: Stub) -> None:
    request = BatchModerateImagesRequest(
        items=[
            BatchModerateImagesRequest.Item(
                correlation_id=f"b{i}", request=ModerateImageRequest(content=content)
            )
            for i, content in enumerate([BLOCK, TINY, PASS])
        ]
    )
    answers = [answer async for answer in stub.BatchModerateImages(request)]
    by_index = {a.index: a for a in answers}
    assert sorted(by_index) == [0, 1, 2]
    assert by_index[0].correlation_id == "b0"
    assert by_index[0].result.suggestion == Suggestion.SUGGESTION_BLOCK
    assert by_index[1].WhichOneof("outcome") == "error"
    assert by_index[2].result.suggestion == Suggestion.SUGGESTION_PASS


async def test_batch_over_the_item_cap_is_refused_whole(stub: Stub, emulator: ImsEmulator) -> None:
    item = BatchModerateImagesRequest.Item(request=ModerateImageRequest(url="https://a.example/x.png"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ = [
            answer
            async for answer in stub.BatchModerateImages(BatchModerateImagesRequest(items=[item] * 1001))
        ]
    error = rich_error(caught.value)
    assert (error.code, error.info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "BATCH_TOO_LARGE")
    assert emulator.stats.requests == 0


async def test_read_ahead_never_exceeds_the_window(
    make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    gateway = await make_gateway(stream_max_in_flight=4)
    emulator.config.latency = 0.2
    async with open_channel(gateway) as channel:
        answers = await stream_all(Stub(channel), items([PASS] * 16))
    assert len(answers) == 16
    assert emulator.stats.max_in_flight == 4


async def test_byte_budget_bounds_big_images(make_gateway: GatewayFactory, emulator: ImsEmulator) -> None:
    big = PASS + b"\0" * 1_000_000
    gateway = await make_gateway(stream_max_in_flight_bytes=2_500_000)
    emulator.config.latency = 0.2
    async with open_channel(gateway) as channel:
        answers = await stream_all(Stub(channel), items([big] * 8))
    assert len(answers) == 8
    # Reading stops once 2.5 MB are in flight: the third 1 MB image is the last one read ahead.
    assert emulator.stats.max_in_flight == 3


async def test_cancel_mid_stream_cancels_backend_calls(stub: Stub, emulator: ImsEmulator) -> None:
    emulator.config.latency = 5.0
    call = stub.StreamModerateImages(iter(items([PASS] * 6)))
    await eventually(lambda: emulator.stats.billed == 6, within=5)
    call.cancel()
    await eventually(lambda: emulator.stats.aborted == 6, within=5)


async def test_deadline_mid_stream_answers_every_item_read(stub: Stub, emulator: ImsEmulator) -> None:
    emulator.config.latency = 3.0
    loop = asyncio.get_running_loop()
    started = loop.time()
    answers = await stream_all(stub, items([PASS] * 5), timeout=1.0)
    assert loop.time() - started < 1.0
    assert sorted(a.index for a in answers) == list(range(5))
    for answer in answers:
        assert answer.error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


async def test_never_over_the_limit_in_a_burst_of_unary_and_stream_calls(
    make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    emulator.config.qps_limit = 20
    gateway = await make_gateway(qps=20)
    async with open_channel(gateway) as channel:
        stub = Stub(channel)
        unary = [stub.ModerateImage(ModerateImageRequest(content=PASS), timeout=20) for _ in range(25)]
        streamed, *results = await asyncio.gather(stream_all(stub, items([PASS] * 40), timeout=20), *unary)
    assert len(streamed) == 40
    assert all(a.WhichOneof("outcome") == "result" for a in streamed)
    assert all(r.attempts == 1 for r in results)
    assert within_the_learning_allowance(emulator.stats.rate_limited, emulator.stats.requests)
    assert emulator.stats.max_in_one_second <= 20


async def test_unary_calls_are_not_starved_by_a_batch(
    make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    emulator.config.latency = 0.1
    gateway = await make_gateway(qps=10)
    async with open_channel(gateway) as channel:
        stub = Stub(channel)
        loop = asyncio.get_running_loop()
        batch = asyncio.create_task(stream_all(stub, items([PASS] * 40)))
        # The batch under way: the budget's first second spent on it.
        await eventually(lambda: emulator.stats.billed >= 10, within=10)
        started = loop.time()
        await stub.ModerateImage(ModerateImageRequest(content=PASS))
        unary_latency = loop.time() - started
        assert not batch.done()
        answers = await batch
    assert len(answers) == 40
    # The batch alone still needs ~3 s of budget; without priority the unary call would wait behind it.
    assert unary_latency < 1.2


async def test_unary_call_that_cannot_get_a_slot_fails_fast(make_gateway: GatewayFactory) -> None:
    gateway: Gateway = await make_gateway(qps=1)
    async with open_channel(gateway) as channel:
        stub = Stub(channel)
        await stub.ModerateImage(ModerateImageRequest(content=PASS))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ModerateImage(ModerateImageRequest(content=PASS), timeout=0.5)
    error = rich_error(caught.value)
    assert (error.code, error.info.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_BUDGET_EXHAUSTED")
    assert error.retry_info is not None


async def test_governor_adapts_when_another_client_shares_the_account(
    make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    emulator.config.qps_limit = 10
    gateway = await make_gateway(qps=20, max_attempts=5)
    async with open_channel(gateway) as channel:
        stub = Stub(channel)
        answers = await stream_all(stub, items([PASS] * 40), timeout=30)
    assert all(a.WhichOneof("outcome") == "result" for a in answers), [
        a.error for a in answers if a.error.code
    ]
    assert emulator.stats.rate_limited > 0
    assert gateway.router.upstreams["tencent"].governor.rate < 20
