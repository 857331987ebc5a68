"""The blocking client against the real gateway; its calls run on a thread beside the gateway's loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator

import grpc
import pytest
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, Suggestion
from moderation_client import (
    ModerationError,
    ServerUnreachable,
    StreamItem,
    StreamResult,
    SyncModerationClient,
)

from emulator import Faults, ImsEmulator
from service.server import Gateway
from testbed.processes import free_port
from tests.support.client_gateways import PASS, address, draining_pair
from tests.support.gateway import GatewayFactory


async def test_a_unary_call_and_its_retry_of_rate_budget_exhausted(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(qps=1)

    def call_twice() -> list[Suggestion.ValueType]:
        with SyncModerationClient(address(gateway), timeout=5, attempt_timeout=0.3) as client:
            return [client.moderate(ModerateImageRequest(content=PASS)).suggestion for _ in range(2)]

    assert await asyncio.to_thread(call_twice) == [Suggestion.SUGGESTION_PASS] * 2
    assert gateway.router.upstreams["tencent"].governor.rejections == 1


async def test_backend_unavailable_is_raised_without_a_retry(gateway: Gateway, emulator: ImsEmulator) -> None:
    emulator.config.faults = Faults(fail_next=["model_call_failed"] * 6)

    def call() -> None:
        with SyncModerationClient(address(gateway)) as client:
            client.moderate(ModerateImageRequest(content=PASS))

    with pytest.raises(ModerationError) as caught:
        await asyncio.to_thread(call)
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.UNAVAILABLE, "BACKEND_UNAVAILABLE")
    assert emulator.stats.requests == 3


def test_nothing_listening_is_unreachable() -> None:
    with (
        SyncModerationClient(f"127.0.0.1:{free_port()}") as client,
        pytest.raises(ServerUnreachable, match=r"within 0\.5 s"),
    ):
        client.wait_until_ready(0.5)


async def test_a_stream_cut_by_a_shutdown_is_resent_to_the_next_server(
    make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    first, second = await draining_pair(make_gateway, emulator)
    loop = asyncio.get_running_loop()
    stopping: list[concurrent.futures.Future[None]] = []

    def items() -> Iterator[StreamItem]:
        for i in range(120):
            yield f"photo-{i}", ModerateImageRequest(content=PASS)

    def stream() -> list[StreamResult]:
        answers = []
        with SyncModerationClient(address(first, second)) as client:
            for answer in client.moderate_stream(items()):
                answers.append(answer)
                if len(answers) == 30:
                    stopping.append(asyncio.run_coroutine_threadsafe(first.stop(), loop))
        return answers

    answers = await asyncio.to_thread(stream)
    await asyncio.wrap_future(stopping[0])
    assert sorted(answer.index for answer in answers) == list(range(120))
    assert all(answer.error is None for answer in answers)
    grants = [gateway.router.upstreams["tencent"].governor.grants for gateway in (first, second)]
    assert all(grants), grants
    assert emulator.stats.billed == 120
