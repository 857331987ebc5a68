"""Identical requests in flight at once make one backend call, in one gateway: concurrent callers share
it, a caller cancelling leaves it running for the others, and the last one leaving cancels it."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, StreamModerateImagesRequest

from emulator import ImsEmulator
from emulator.images import make_png
from service.cache import Coalescer
from tests.support.gateway import GatewayFactory, open_channel

Stub = moderation_service_pb2_grpc.ModerationServiceStub
IMAGE = make_png(64, 64, "IMSEMU:Review:Terror:Knife:93")
LATENCY = 0.5


@pytest.fixture
async def slow_cached(make_gateway: GatewayFactory, emulator: ImsEmulator) -> Stub:
    emulator.config.latency = LATENCY
    gateway = await make_gateway(cache="memory")
    channel = open_channel(gateway)
    await channel.channel_ready()
    return Stub(channel)


async def test_concurrent_identical_calls_make_one_backend_call(
    slow_cached: Stub, emulator: ImsEmulator
) -> None:
    calls = [
        slow_cached.ModerateImage(ModerateImageRequest(content=IMAGE, data_id=f"d{n}"), timeout=10)
        for n in range(20)
    ]
    answers = await asyncio.gather(*calls)
    assert emulator.stats.billed == 1
    assert sorted(a.data_id for a in answers) == sorted(f"d{n}" for n in range(20))
    assert sum(a.cached for a in answers) == 19
    assert len({a.request_id for a in answers}) == 1
    assert {a.label for a in answers} == {"Terror"}


async def test_a_stream_of_one_image_makes_one_call(slow_cached: Stub, emulator: ImsEmulator) -> None:
    items = [
        StreamModerateImagesRequest(correlation_id=str(n), request=ModerateImageRequest(content=IMAGE))
        for n in range(50)
    ]
    answers = [a async for a in slow_cached.StreamModerateImages(iter(items), timeout=10)]
    assert len(answers) == 50
    assert all(a.HasField("result") for a in answers)
    assert emulator.stats.billed == 1


async def test_the_first_caller_cancelling_leaves_the_call_to_the_others(
    slow_cached: Stub, emulator: ImsEmulator
) -> None:
    first = slow_cached.ModerateImage(ModerateImageRequest(content=IMAGE, data_id="first"), timeout=10)
    await asyncio.sleep(LATENCY / 5)
    second = slow_cached.ModerateImage(ModerateImageRequest(content=IMAGE, data_id="second"), timeout=10)
    await asyncio.sleep(LATENCY / 5)
    first.cancel()
    answer = await second
    with pytest.raises(asyncio.CancelledError):
        await first
    assert (answer.data_id, answer.cached) == ("second", True)
    assert emulator.stats.billed == 1


async def test_a_waiter_makes_its_own_call_when_the_shared_one_fails(
    slow_cached: Stub, emulator: ImsEmulator
) -> None:
    # The shared call runs under its first caller's deadline, too short for the backend.
    hasty = slow_cached.ModerateImage(ModerateImageRequest(content=IMAGE), timeout=LATENCY / 2)
    await asyncio.sleep(0.05)
    patient = slow_cached.ModerateImage(ModerateImageRequest(content=IMAGE), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hasty
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    answer = await patient
    assert (answer.label, answer.cached, answer.attempts) == ("Terror", False, 1)
    assert emulator.stats.billed == 2


async def test_the_shared_call_is_cancelled_when_its_last_caller_leaves() -> None:
    coalescer: Coalescer[str] = Coalescer()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def call() -> str:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    callers = [asyncio.create_task(coalescer.run("key", call)) for _ in range(3)]
    await started.wait()
    for number, caller in enumerate(callers):
        caller.cancel()
        await asyncio.sleep(0.01)
        # Running while anyone still waits for it.
        assert cancelled.is_set() == (number == len(callers) - 1)
    assert not coalescer.running("key")


async def test_a_caller_arriving_after_the_last_left_starts_a_new_call() -> None:
    coalescer: Coalescer[int] = Coalescer()
    calls = 0

    async def call() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return calls

    leaving = asyncio.create_task(coalescer.run("key", call))
    await asyncio.sleep(0.01)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert await coalescer.run("key", call) == (2, False)
    together = await asyncio.gather(coalescer.run("key", call), coalescer.run("key", call))
    assert list(together) == [(3, False), (3, True)]
