"""The verdict cache in one gateway against the emulator: hits, misses, TTLs, what separates keys,
what bypasses the cache, what is never cached, and streams answered from it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import (
    Device,
    ModerateImageRequest,
    StreamModerateImagesRequest,
    Suggestion,
    User,
)
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from emulator import Faults, ImsEmulator
from emulator.images import make_png
from service.routing import Route
from service.server import Gateway
from service.telemetry import setup_telemetry
from testbed.fileserver import serve_files
from tests.support.eventually import eventually
from tests.support.gateway import GatewayFactory, moderate, open_channel
from tests.support.routed_gateway import routes_file, start_emulator, start_gateway

Stub = moderation_service_pb2_grpc.ModerationServiceStub
PASS = make_png(64, 64)
BLOCK = make_png(64, 64, "IMSEMU:Block:Porn:SexBehavior:97")
REVIEW = make_png(64, 64, "IMSEMU:Review:Terror:Knife:93")


def counters(reader: InMemoryMetricReader) -> dict[str, float]:
    """Each counter's total over its series, by Prometheus-style name without `_total`."""
    data = reader.get_metrics_data()
    totals: dict[str, float] = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points = getattr(metric.data, "data_points", [])
                totals[metric.name] = sum(getattr(p, "value", 0) for p in points)
    return totals


@pytest.fixture
async def cached(make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway(cache="memory")


async def test_a_repeated_image_is_answered_from_the_cache_with_its_own_data_id(
    cached: Gateway, emulator: ImsEmulator
) -> None:
    first = await moderate(cached, ModerateImageRequest(content=BLOCK, data_id="first"))
    again = await moderate(cached, ModerateImageRequest(content=BLOCK, data_id="again"))
    assert emulator.stats.billed == 1
    assert (first.cached, first.attempts, first.data_id) == (False, 1, "first")
    assert (again.cached, again.attempts, again.data_id) == (True, 0, "again")
    assert again.request_id == first.request_id
    assert (again.suggestion, again.label, again.sub_label, again.score) == (
        Suggestion.SUGGESTION_BLOCK,
        "Porn",
        "SexBehavior",
        97,
    )
    assert again.backend == first.backend == "tencent"
    # The rest of the verdict is the first answer's, as it was.
    for answer in (first, again):
        answer.ClearField("data_id")
        answer.ClearField("attempts")
        answer.ClearField("cached")
    assert again == first


async def test_each_call_decides_its_route_once(
    cached: Gateway, emulator: ImsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fitting, the cache and the router read the route the servicer decided: none decides it again.
    route_for = cached.router.route_for
    decided: list[str] = []

    def counted(biz_type: str) -> Route:
        decided.append(biz_type)
        return route_for(biz_type)

    monkeypatch.setattr(cached.router, "route_for", counted)
    missed = await moderate(cached, ModerateImageRequest(content=REVIEW, biz_type="chat"))
    hit = await moderate(cached, ModerateImageRequest(content=REVIEW, biz_type="chat"))
    assert (missed.cached, hit.cached, emulator.stats.billed) == (False, True, 1)
    assert decided == ["chat", "chat"]


async def test_a_hit_still_checks_the_request_s_own_fields(cached: Gateway, emulator: ImsEmulator) -> None:
    await moderate(cached, ModerateImageRequest(content=BLOCK))
    async with open_channel(cached) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await Stub(channel).ModerateImage(ModerateImageRequest(content=BLOCK, data_id="no spaces"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "data_id" in (caught.value.details() or "")
    assert emulator.stats.billed == 1


async def test_other_images_and_other_request_fields_are_other_keys(
    cached: Gateway, emulator: ImsEmulator
) -> None:
    requests = [
        ModerateImageRequest(content=PASS),
        ModerateImageRequest(content=REVIEW),
        ModerateImageRequest(content=PASS, biz_type="chat"),
        ModerateImageRequest(content=PASS, biz_type="avatars"),
        ModerateImageRequest(content=PASS, biz_tag="night"),
        ModerateImageRequest(content=PASS, interval=2, max_frames=3),
    ]
    for request in requests:
        assert not (await moderate(cached, request)).cached
    for request in requests:
        assert (await moderate(cached, request)).cached
    assert emulator.stats.billed == len(requests)


async def test_each_suggestion_keeps_its_ttl(make_gateway: GatewayFactory, emulator: ImsEmulator) -> None:
    gateway = await make_gateway(cache="memory", cache_ttl_pass=0.5, cache_ttl_block=0)
    assert not (await moderate(gateway, ModerateImageRequest(content=PASS))).cached
    assert (await moderate(gateway, ModerateImageRequest(content=PASS))).cached
    # BLOCK's TTL of 0: never cached.
    for _ in range(2):
        assert not (await moderate(gateway, ModerateImageRequest(content=BLOCK))).cached

    async def expired() -> bool:
        return not (await moderate(gateway, ModerateImageRequest(content=PASS))).cached

    await eventually(expired, within=5)
    assert emulator.stats.billed == 4


async def test_requests_with_user_or_device_go_to_the_backend(
    make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    reader = InMemoryMetricReader()
    gateway = await make_gateway(setup_telemetry({}, metric_readers=[reader]), cache="memory")
    user = ModerateImageRequest(content=PASS, user=User(user_id="u1"))
    device = ModerateImageRequest(content=PASS, device=Device(ip="10.0.0.1"))
    for request in (user, user, device, device):
        assert not (await moderate(gateway, request)).cached
    assert emulator.stats.billed == 4
    assert counters(reader)["moderation.cache.bypassed"] == 4


async def test_url_images_are_cached_only_when_the_operator_opts_in(
    make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    off = await make_gateway(cache="memory")
    on = await make_gateway(cache="memory", cache_urls=True)
    with serve_files({"/block.png": BLOCK}) as files:
        request = ModerateImageRequest(url=f"{files}/block.png")
        assert [(await moderate(off, request)).cached for _ in range(2)] == [False, False]
        assert [(await moderate(on, request)).cached for _ in range(2)] == [False, True]
    assert emulator.stats.billed == 3


async def test_a_stream_is_answered_from_the_cache(cached: Gateway, emulator: ImsEmulator) -> None:
    images = [PASS, REVIEW, BLOCK]

    async def items() -> AsyncIterator[StreamModerateImagesRequest]:
        for index in range(30):
            # Slowly enough that each image's first call is answered before it comes back.
            await asyncio.sleep(0.005 if index >= 3 else 0.05)
            yield StreamModerateImagesRequest(
                correlation_id=str(index),
                request=ModerateImageRequest(content=images[index % 3], data_id=f"d{index}"),
            )

    async with open_channel(cached) as channel:
        answers = [a async for a in Stub(channel).StreamModerateImages(items(), timeout=20)]
    assert len(answers) == 30
    assert emulator.stats.billed == 3
    assert sum(a.result.cached for a in answers) == 27
    assert all(a.result.data_id == f"d{a.index}" for a in answers)
    expected = [Suggestion.SUGGESTION_PASS, Suggestion.SUGGESTION_REVIEW, Suggestion.SUGGESTION_BLOCK]
    assert all(a.result.suggestion == expected[a.index % 3] for a in answers)


@pytest.fixture
def backends() -> Iterator[tuple[ImsEmulator, ImsEmulator]]:
    """Two emulators: `cloud` and `onprem` of `tests.support.routed_gateway.routes_file`."""
    first, second = start_emulator(), start_emulator()
    yield first, second
    first.stop()
    second.stop()


@contextlib.asynccontextmanager
async def routed(
    tmp_path: Path, backends: tuple[ImsEmulator, ImsEmulator], routes: str, **env: str
) -> AsyncIterator[Gateway]:
    """A gateway with the memory cache and the routing file's `routes`."""
    gateway = await start_gateway(routes_file(tmp_path, *backends, routes), MODERATION_CACHE="memory", **env)
    try:
        yield gateway
    finally:
        await gateway.stop()


async def test_fallback_and_unmoderated_answers_are_never_cached(
    tmp_path: Path, backends: tuple[ImsEmulator, ImsEmulator]
) -> None:
    routes = (
        '[[routes]]\nbiz_types = ["closed"]\nchain = ["cloud"]\non_failure = "review"\nattempts = 1\n'
        '[default]\nchain = ["cloud", "onprem"]\nattempts = 1\n'
    )
    async with routed(tmp_path, backends, routes, MODERATION_CIRCUIT_FAILURES="1000") as gateway:
        await fallback_then_first_choice(gateway, *backends)


async def fallback_then_first_choice(gateway: Gateway, primary: ImsEmulator, secondary: ImsEmulator) -> None:
    primary.config.faults = Faults(internal_error=1.0)
    for _ in range(3):
        fallback = await moderate(gateway, ModerateImageRequest(content=PASS))
        assert (fallback.backend, fallback.fallback, fallback.cached) == ("onprem", True, False)
        closed = await moderate(gateway, ModerateImageRequest(content=PASS, biz_type="closed"))
        assert (closed.unmoderated, closed.cached) == (True, False)
    assert secondary.stats.billed == 3
    # Once the first choice answers again, its verdict is cached.
    primary.config.faults = Faults()
    answers = [await moderate(gateway, ModerateImageRequest(content=PASS)) for _ in range(2)]
    assert [(a.backend, a.fallback, a.cached) for a in answers] == [
        ("cloud", False, False),
        ("cloud", False, True),
    ]


async def test_a_route_may_cache_requests_with_user_fields(
    tmp_path: Path, backends: tuple[ImsEmulator, ImsEmulator]
) -> None:
    routes = (
        '[[routes]]\nbiz_types = ["avatars"]\nchain = ["cloud"]\ncache_user_fields = true\n'
        '[default]\nchain = ["cloud"]\n'
    )
    async with routed(tmp_path, backends, routes) as gateway:
        for biz_type in ("avatars", "chat"):
            for user_id in ("u1", "u2"):
                request = ModerateImageRequest(content=PASS, biz_type=biz_type, user=User(user_id=user_id))
                await moderate(gateway, request)
    # avatars: once for both users; chat: once per call.
    assert backends[0].stats.billed == 3
