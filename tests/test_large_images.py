"""Large images through the real gateway and the emulator, which verifies every TC3 signature: bodies of
`OFF_LOOP_BODY_BYTES` or more are signed in a worker thread, smaller ones on the event loop."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, Suggestion

from backends.tencent import client
from emulator.images import make_jpeg
from service.server import Gateway
from tests.support.gateway import open_channel


def jpeg_of(size: int) -> bytes:
    head = make_jpeg(320, 240)
    return head + os.urandom(size - len(head))


@pytest.mark.parametrize(
    ("size", "threaded"),
    [(17 * 1024, False), (client.OFF_LOOP_BODY_BYTES * 3 // 4 + 1024, True), (5_000_000, True)],
)
async def test_a_large_image_is_signed_off_the_loop_and_verified(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, size: int, threaded: bool
) -> None:
    hops: list[str] = []
    hop = asyncio.to_thread

    async def to_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(function, "__qualname__", repr(function)))
        return await hop(function, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", to_thread)
    async with open_channel(gateway) as channel:
        result = await moderation_service_pb2_grpc.ModerationServiceStub(channel).ModerateImage(
            ModerateImageRequest(content=jpeg_of(size)), timeout=30
        )
    assert result.suggestion == Suggestion.SUGGESTION_PASS
    assert hops == (["TC3Auth.headers"] if threaded else [])


async def test_a_finished_call_lets_go_of_its_body_without_the_collector(gateway: Gateway) -> None:
    # Were a request or its answer in a reference cycle, each (a large image's body with it) would live
    # until a full collection, and a stream of large images would pile them up (httpx's streamed
    # responses were, until the gateway called aiohttp directly).
    async with open_channel(gateway) as channel:
        stub = moderation_service_pb2_grpc.ModerationServiceStub(channel)
        await stub.ModerateImage(ModerateImageRequest(content=jpeg_of(2_000_000)), timeout=30)
        gc.collect()
        gc.disable()
        try:
            await stub.ModerateImage(ModerateImageRequest(content=jpeg_of(2_000_000)), timeout=30)
            exchanges = (aiohttp.ClientRequest, aiohttp.ClientResponse)
            alive = [o for o in gc.get_objects() if isinstance(o, exchanges)]
        finally:
            gc.enable()
    assert alive == []
