"""Gateway processes with the Redis verdict cache, and a call to one by its address."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator

from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse

from testbed.client import open_channel, stub
from testbed.processes import free_port, spawn_service
from tests.support.service_process import stop_gateway, wait_serving

VERDICT_KEYS = "moderation:cache:verdict:*"


@contextlib.asynccontextmanager
async def gateway(redis_url: str, **settings: str) -> AsyncIterator[str]:
    """A gateway process with the Redis cache; yields its address, stops it on exit."""
    async with gateway_process(redis_url, **settings) as (address, _):
        yield address


@contextlib.asynccontextmanager
async def gateway_process(
    redis_url: str, **settings: str
) -> AsyncIterator[tuple[str, subprocess.Popen[str]]]:
    """A gateway process with the Redis cache and text logs; yields its address and process."""
    port = free_port()
    process = spawn_service(
        port,
        MODERATION_CACHE="redis",
        MODERATION_REDIS_URL=redis_url,
        MODERATION_METRICS_LISTEN="off",
        MODERATION_LOG_FORMAT="text",
        **settings,
    )
    try:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            await wait_serving(channel)
        yield f"127.0.0.1:{port}", process
    finally:
        await stop_gateway(process)


async def moderate(address: str, image: bytes) -> ModerateImageResponse:
    async with open_channel(address) as channel:
        answer: ModerateImageResponse = await stub(channel).ModerateImage(
            ModerateImageRequest(content=image), timeout=30
        )
        return answer
