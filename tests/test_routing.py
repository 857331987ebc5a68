"""Routing by BizType, failover down a chain, circuits, and failing closed, against real emulators."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, Suggestion

from emulator import ImsEmulator
from emulator.images import make_png
from service.server import Gateway, backend_health_name
from tests.support.eventually import eventually
from tests.support.gateway import open_channel
from tests.support.richstatus import rich_error
from tests.support.routed_gateway import routes_file, start_emulator, start_gateway

Stub = moderation_service_pb2_grpc.ModerationServiceStub
IMAGE = make_png(256, 256)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def primary() -> Iterator[ImsEmulator]:
    emulator = start_emulator()
    yield emulator
    emulator.stop()


@pytest.fixture
def secondary() -> Iterator[ImsEmulator]:
    emulator = start_emulator()
    yield emulator
    emulator.stop()


@pytest.fixture
async def gateways() -> AsyncIterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for gateway in started:
        await gateway.stop()


async def test_routes_by_biz_type(
    tmp_path: Path, primary: ImsEmulator, secondary: ImsEmulator, gateways: list[Gateway]
) -> None:
    path = routes_file(
        tmp_path,
        primary,
        secondary,
        '[[routes]]\nbiz_types = ["kids_*", "avatars"]\nchain = ["onprem"]\n[default]\nchain = ["cloud"]\n',
    )
    gateways.append(gateway := await start_gateway(path))
    async with open_channel(gateway) as channel:
        stub = Stub(channel)
        answered = {
            biz_type: (
                await stub.ModerateImage(ModerateImageRequest(content=IMAGE, biz_type=biz_type))
            ).backend
            for biz_type in ("kids_app", "avatars", "chat_images", "kidsapp")
        }
    assert answered == {"kids_app": "onprem", "avatars": "onprem", "chat_images": "cloud", "kidsapp": "cloud"}
    assert (primary.stats.billed, secondary.stats.billed) == (2, 2)


async def test_failover_when_the_primary_dies_mid_run(
    tmp_path: Path, primary: ImsEmulator, secondary: ImsEmulator, gateways: list[Gateway]
) -> None:
    path = routes_file(tmp_path, primary, secondary, '[default]\nchain = ["cloud", "onprem"]\n')
    gateways.append(gateway := await start_gateway(path))
    answers = []
    async with open_channel(gateway) as channel:
        stub = Stub(channel)
        for wave in range(6):
            if wave == 2:
                primary.stop()
            calls = [stub.ModerateImage(ModerateImageRequest(content=IMAGE), timeout=10) for _ in range(5)]
            answers.extend(await asyncio.gather(*calls))
    assert len(answers) == 30
    assert all(a.suggestion == Suggestion.SUGGESTION_PASS for a in answers)
    assert [(a.backend, a.fallback) for a in answers[:10]] == [("cloud", False)] * 10
    assert {(a.backend, a.fallback) for a in answers[10:]} == {("onprem", True)}


async def test_circuit_opens_then_probes_and_closes(
    tmp_path: Path, primary: ImsEmulator, secondary: ImsEmulator, gateways: list[Gateway]
) -> None:
    path = routes_file(tmp_path, primary, secondary, '[default]\nchain = ["cloud", "onprem"]\n')
    gateways.append(
        gateway := await start_gateway(path, MODERATION_CIRCUIT_FAILURES="3", MODERATION_CIRCUIT_RESET="1.0")
    )
    port = primary.port
    primary.stop()
    async with open_channel(gateway) as channel:
        stub = Stub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(6):
            answer = await stub.ModerateImage(ModerateImageRequest(content=IMAGE))
            assert (answer.backend, answer.fallback) == ("onprem", True)
        upstream = gateway.router.upstreams["cloud"]
        assert upstream.breaker.state.name == "OPEN"

        async def cloud_down_overall_serving() -> bool:
            cloud = await health.Check(health_pb2.HealthCheckRequest(service=backend_health_name("cloud")))
            overall = await health.Check(health_pb2.HealthCheckRequest())
            return (cloud.status, overall.status) == (NOT_SERVING, SERVING)

        await eventually(cloud_down_overall_serving, within=5)
        revived = start_emulator(port)
        try:
            # Once the circuit's reset time has passed, the next call probes the primary again.
            async def answered_by_the_primary() -> bool:
                answer = await stub.ModerateImage(ModerateImageRequest(content=IMAGE))
                return (answer.backend, answer.fallback) == ("cloud", False)

            await eventually(answered_by_the_primary, within=5, every=0.1)
            assert upstream.breaker.state.name == "CLOSED"
            assert revived.stats.billed == 1
        finally:
            revived.stop()


@pytest.mark.parametrize("on_failure", ["review", "error"])
async def test_when_every_backend_is_down(
    tmp_path: Path, primary: ImsEmulator, secondary: ImsEmulator, gateways: list[Gateway], on_failure: str
) -> None:
    path = routes_file(
        tmp_path, primary, secondary, f'[default]\nchain = ["cloud", "onprem"]\non_failure = "{on_failure}"\n'
    )
    gateways.append(gateway := await start_gateway(path, MODERATION_CIRCUIT_FAILURES="2"))
    primary.stop()
    secondary.stop()
    async with open_channel(gateway) as channel:
        stub = Stub(channel)
        if on_failure == "review":
            for _ in range(4):
                answer = await stub.ModerateImage(ModerateImageRequest(content=IMAGE, data_id="x1"))
                assert (answer.suggestion, answer.unmoderated, answer.fallback) == (
                    Suggestion.SUGGESTION_REVIEW,
                    True,
                    True,
                )
                assert answer.data_id == "x1"
        else:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ModerateImage(ModerateImageRequest(content=IMAGE))
            error = rich_error(caught.value)
            assert (error.code, error.info.reason) == (grpc.StatusCode.UNAVAILABLE, "BACKEND_UNAVAILABLE")
            assert error.info.metadata["backend"] == "onprem"
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError):
                    await stub.ModerateImage(ModerateImageRequest(content=IMAGE))
        health = health_pb2_grpc.HealthStub(channel)

        # Every circuit is open: no route can answer, and health says so.
        async def not_serving() -> bool:
            return bool((await health.Check(health_pb2.HealthCheckRequest())).status == NOT_SERVING)

        await eventually(not_serving, within=5)


async def test_invalid_requests_do_not_fail_over(
    tmp_path: Path, primary: ImsEmulator, secondary: ImsEmulator, gateways: list[Gateway]
) -> None:
    path = routes_file(tmp_path, primary, secondary, '[default]\nchain = ["cloud", "onprem"]\n')
    gateways.append(gateway := await start_gateway(path))
    from emulator import Faults

    primary.config.faults = Faults(fail_next=["InvalidParameter.InvalidImageContent"])
    async with open_channel(gateway) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await Stub(channel).ModerateImage(ModerateImageRequest(content=IMAGE))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert secondary.stats.requests == 0


async def test_a_route_spends_only_its_share_of_the_budget(
    tmp_path: Path, primary: ImsEmulator, secondary: ImsEmulator, gateways: list[Gateway]
) -> None:
    path = routes_file(
        tmp_path,
        primary,
        secondary,
        '[[routes]]\nbiz_types = ["bulk"]\nchain = ["cloud"]\nrate_share = 0.25\n'
        '[default]\nchain = ["cloud"]\n',
    )
    gateways.append(gateway := await start_gateway(path, IMS_QPS="20"))
    async with open_channel(gateway) as channel:
        stub = Stub(channel)
        bulk = [
            stub.ModerateImage(ModerateImageRequest(content=IMAGE, biz_type="bulk"), timeout=10)
            for _ in range(8)
        ]
        answers = await asyncio.gather(*bulk)
    assert len(answers) == 8
    # 25 % of 20/s: never more than 5 of the route's calls in any second.
    assert primary.stats.max_in_one_second <= 5
