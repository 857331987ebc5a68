"""Large images through the real gateway and the emulator, which verifies every TC3 signature: bodies of
`OFF_LOOP_BODY_BYTES` or more are signed in a worker thread, smaller ones on the event loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import pytest
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, Suggestion

from backends.tencent import client
from emulator.images import make_jpeg
from service.server import Gateway
from tests.conftest import open_channel


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

    async def to_thread(function: Callable[..., Any], *args: Any) -> Any:
        hops.append(getattr(function, "__name__", repr(function)))
        return await hop(function, *args)

    monkeypatch.setattr(asyncio, "to_thread", to_thread)
    async with open_channel(gateway) as channel:
        result = await moderation_service_pb2_grpc.ModerationServiceStub(channel).ModerateImage(
            ModerateImageRequest(content=jpeg_of(size)), timeout=30
        )
    assert result.suggestion == Suggestion.SUGGESTION_PASS
    assert hops == (["next"] if threaded else [])
