"""The verdict cache shared by two real gateway processes through a real redis-server: one backend call
per image across the fleet, a version bump, and Redis killed mid-run (calls go on, uncached)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator

import httpx
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse

from emulator import ImsEmulator
from emulator.images import make_png
from testbed.client import open_channel, stub
from testbed.processes import free_port, spawn_service
from testbed.redis_server import RedisServer
from testbed.stream import StreamResult, run_stream
from tests.support.eventually import eventually
from tests.support.gateway import SECRET_ID, SECRET_KEY
from tests.support.service_process import stop_gateway, wait_serving

LATENCY = 0.4
IMAGES = [make_png(64, 64, f"IMSEMU:Review:Ad:Contact{n}:{50 + n}") for n in range(5)]


@contextlib.asynccontextmanager
async def replica(
    emulator: ImsEmulator, redis_url: str, **settings: str
) -> AsyncIterator[tuple[subprocess.Popen[str], str, str]]:
    """A gateway with the Redis cache; yields its process, address and /metrics URL."""
    port, metrics = free_port(), f"127.0.0.1:{free_port()}"
    process = spawn_service(
        port,
        TENCENTCLOUD_SECRET_ID=SECRET_ID,
        TENCENTCLOUD_SECRET_KEY=SECRET_KEY,
        IMS_ENDPOINT=emulator.url,
        MODERATION_CACHE="redis",
        MODERATION_REDIS_URL=redis_url,
        MODERATION_METRICS_LISTEN=metrics,
        MODERATION_LOG_FORMAT="text",
        **settings,
    )
    try:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            await wait_serving(channel)
        yield process, f"127.0.0.1:{port}", f"http://{metrics}/metrics"
    finally:
        await stop_gateway(process)


async def moderate(address: str, image: bytes, data_id: str = "") -> ModerateImageResponse:
    async with open_channel(address) as channel:
        answer: ModerateImageResponse = await stub(channel).ModerateImage(
            ModerateImageRequest(content=image, data_id=data_id), timeout=10
        )
        return answer


async def metric(url: str, name: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(url, timeout=5)).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def test_two_replicas_make_one_backend_call_per_image(
    emulator: ImsEmulator, redis: RedisServer
) -> None:
    emulator.config.latency = LATENCY
    async with (
        replica(emulator, redis.url) as (_, first, first_metrics),
        replica(emulator, redis.url) as (_, second, second_metrics),
    ):
        # At once on both replicas: one calls IMS, the other waits for its verdict in Redis.
        calls = [
            moderate(address, image, f"r{replica}-{n}")
            for n, image in enumerate(IMAGES)
            for replica, address in enumerate((first, second))
        ]
        answers = await asyncio.gather(*calls)
        assert emulator.stats.billed == len(IMAGES)
        assert sum(a.cached for a in answers) == len(IMAGES)
        # Later, anywhere in the fleet: hits.
        later = [await moderate(address, image) for image in IMAGES for address in (first, second)]
        assert all(a.cached for a in later)
        assert emulator.stats.billed == len(IMAGES)
        fleet_waits = await metric(first_metrics, "moderation_cache_coalesced_total") + await metric(
            second_metrics, "moderation_cache_coalesced_total"
        )
        billed = await metric(first_metrics, "moderation_billed_calls_total") + await metric(
            second_metrics, "moderation_billed_calls_total"
        )
    assert fleet_waits == len(IMAGES)
    assert billed == len(IMAGES)
    by_data_id = {a.data_id: a for a in answers}
    for n in range(len(IMAGES)):
        pair = [by_data_id[f"r{replica}-{n}"] for replica in (0, 1)]
        assert {a.sub_label for a in pair} == {f"Contact{n}"}
        assert pair[0].request_id == pair[1].request_id


async def test_a_version_bump_misses_what_the_fleet_cached(emulator: ImsEmulator, redis: RedisServer) -> None:
    async with replica(emulator, redis.url) as (_, old, _):
        assert not (await moderate(old, IMAGES[0])).cached
        async with replica(emulator, redis.url) as (_, same, _):
            assert (await moderate(same, IMAGES[0])).cached
        async with replica(emulator, redis.url, MODERATION_CACHE_VERSION="2") as (_, bumped, _):
            assert not (await moderate(bumped, IMAGES[0])).cached
    assert emulator.stats.billed == 2


async def test_redis_killed_mid_run_bypasses_the_cache_and_answers_everything(
    emulator: ImsEmulator, redis: RedisServer
) -> None:
    emulator.config.latency = 0.05
    async with (
        replica(emulator, redis.url) as (first_process, first, first_metrics),
        replica(emulator, redis.url) as (_, second, _),
    ):
        streams = [asyncio.create_task(stream(address)) for address in (first, second)]
        await eventually(lambda: emulator.stats.billed >= 20, within=10)  # both streams under way
        redis.stop()
        results = await asyncio.gather(*streams)
        # Redis gone: still answered, from the in-process LRU or the backend.
        assert (await moderate(first, make_png(64, 64, "IMSEMU:Pass:Normal::1"))).suggestion
        bypassed = await metric(first_metrics, "moderation_cache_bypassed_total")
    for result in results:
        assert result.call_error is None
        assert not result.errors
        assert result.answered_once == ITEMS
    assert bypassed >= 1
    output = first_process.stdout.read() if first_process.stdout else ""
    assert output.count("verdict cache: Redis unreachable") >= 1


ITEMS = 300


async def stream(address: str) -> StreamResult:
    # Distinct images, slowly, so some are sent after Redis is gone.
    images = [make_png(64, 64, f"IMSEMU:Pass:Normal::{n % 100}", color=(n % 256, 0, 0)) for n in range(60)]
    async with open_channel(address) as channel:
        return await run_stream(stub(channel), images, ITEMS, window=8)
