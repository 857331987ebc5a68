"""Draining, recovery and hostile clients: every item read is answered, nothing hangs or grows."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import (
    ModerateImageRequest,
    StreamModerateImagesRequest,
    StreamModerateImagesResponse,
)

from emulator import EmulatorConfig, ImsEmulator
from emulator.images import make_png
from testbed.processes import free_port
from tests.support.gateway import CHANNEL_OPTIONS, SECRET_ID, SECRET_KEY, GatewayFactory, open_channel
from tests.support.richstatus import rich_error
from tests.support.service_process import start_service, wait_serving

Stub = moderation_service_pb2_grpc.ModerationServiceStub
IMAGE = make_png(256, 256)


def item(i: int) -> StreamModerateImagesRequest:
    return StreamModerateImagesRequest(correlation_id=str(i), request=ModerateImageRequest(content=IMAGE))


async def test_shutdown_answers_every_item_read_and_ends_the_stream_clearly(
    make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    emulator.config.latency = 0.3
    gateway = await make_gateway(stream_max_in_flight=16)
    answers: list[StreamModerateImagesResponse] = []
    stopping: list[asyncio.Task[None]] = []

    def stop_after_forty() -> None:
        if len(answers) == 40:
            stopping.append(asyncio.create_task(gateway.stop()))

    async with open_channel(gateway) as channel:
        call = Stub(channel).StreamModerateImages(iter([item(i) for i in range(2000)]))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _collect(call, answers, stop_after_forty)
        await stopping[0]
    error = rich_error(caught.value)
    assert (error.code, error.info.reason) == (grpc.StatusCode.UNAVAILABLE, "SERVER_DRAINING")
    items_read = int(error.info.metadata["items_read"])
    indexes = sorted(a.index for a in answers)
    assert indexes == list(range(items_read))
    assert all(a.WhichOneof("outcome") == "result" for a in answers)
    assert emulator.stats.billed == items_read


async def test_a_backend_that_dies_and_returns_gives_errors_then_results(
    make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    gateway = await make_gateway(stream_max_in_flight=4, max_attempts=1, circuit_failures=1000)
    port = emulator.port
    revived: list[ImsEmulator] = []

    async def items() -> AsyncIterator[StreamModerateImagesRequest]:
        for i in range(60):
            if i == 15:
                emulator.stop()
            if i == 30:
                config = EmulatorConfig(secret_id=SECRET_ID, secret_key=SECRET_KEY)
                revived.append(ImsEmulator(config, host="127.0.0.1", port=port).start())
            yield item(i)
            await asyncio.sleep(0.01)

    try:
        async with open_channel(gateway) as channel:
            answers: list[StreamModerateImagesResponse] = []
            await asyncio.wait_for(_collect(Stub(channel).StreamModerateImages(items()), answers), timeout=60)
    finally:
        for emulator_ in revived:
            emulator_.stop()
    assert sorted(a.index for a in answers) == list(range(60))
    outcomes = [
        answers_by_index.WhichOneof("outcome") for answers_by_index in sorted(answers, key=lambda a: a.index)
    ]
    assert "error" in outcomes[15:30]
    assert set(outcomes[-10:]) == {"result"}
    failed = [a for a in answers if a.WhichOneof("outcome") == "error"]
    assert {a.error.code for a in failed} == {grpc.StatusCode.UNAVAILABLE.value[0]}


async def _collect(
    call: AsyncIterator[StreamModerateImagesResponse],
    answers: list[StreamModerateImagesResponse],
    after_each: Callable[[], None] = lambda: None,
) -> None:
    async for answer in call:
        answers.append(answer)
        after_each()


async def test_an_idle_stream_is_closed(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(stream_idle_timeout=0.5)

    async def one_then_silence() -> AsyncIterator[StreamModerateImagesRequest]:
        yield item(0)
        await asyncio.sleep(30)

    loop = asyncio.get_running_loop()
    started = loop.time()
    answers: list[StreamModerateImagesResponse] = []
    async with open_channel(gateway) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _collect(Stub(channel).StreamModerateImages(one_then_silence()), answers)
    assert len(answers) == 1
    error = rich_error(caught.value)
    assert (error.code, error.info.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "STREAM_IDLE")
    assert loop.time() - started < 5


async def test_calls_past_the_server_cap_get_resource_exhausted(
    make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    emulator.config.latency = 1.0
    gateway = await make_gateway(max_concurrent_rpcs=2)
    async with open_channel(gateway) as channel:
        stub = Stub(channel)
        outcomes = await asyncio.gather(
            *(stub.ModerateImage(ModerateImageRequest(content=IMAGE)) for _ in range(4)),
            return_exceptions=True,
        )
    errors = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(errors) == 2
    assert {e.code() for e in errors} == {grpc.StatusCode.RESOURCE_EXHAUSTED}


async def test_an_oversized_message_is_refused_with_a_clear_status(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}", options=CHANNEL_OPTIONS) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await Stub(channel).ModerateImage(ModerateImageRequest(content=b"\0" * (20 * 1024 * 1024)))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (caught.value.details() or "")


@pytest.mark.system
async def test_sigterm_during_a_2000_item_stream(emulator: ImsEmulator) -> None:
    emulator.config.latency = 0.3
    port = free_port()
    process = start_service(emulator, port, MODERATION_STREAM_MAX_IN_FLIGHT="16")
    answers: list[StreamModerateImagesResponse] = []
    loop = asyncio.get_running_loop()
    signalled: list[float] = []

    def terminate_after_forty() -> None:
        if len(answers) == 40:
            process.send_signal(signal.SIGTERM)
            signalled.append(loop.time())

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await wait_serving(channel)
            call = Stub(channel).StreamModerateImages(iter([item(i) for i in range(2000)]))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _collect(call, answers, terminate_after_forty)
        returncode = await asyncio.to_thread(process.wait, 30)
        exited_after = loop.time() - signalled[0]
    finally:
        process.kill()
    error = rich_error(caught.value)
    assert (error.code, error.info.reason) == (grpc.StatusCode.UNAVAILABLE, "SERVER_DRAINING")
    assert sorted(a.index for a in answers) == list(range(int(error.info.metadata["items_read"])))
    assert returncode == 0
    assert exited_after < 20  # the default grace period
