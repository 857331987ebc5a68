"""Backends in-process, for the unit tests of what stands in front of one."""

from __future__ import annotations

import asyncio

from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse, Suggestion

from backends.base import Fingerprint
from backends.image_limits import IMS_IMAGE_LIMITS


class SlowBackend:
    """Answers PASS after `seconds`."""

    name = "slow"
    concurrency = None
    fingerprint = Fingerprint.of("slow")
    image_limits = IMS_IMAGE_LIMITS

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def moderate(self, request: ModerateImageRequest, *, timeout: float) -> ModerateImageResponse:
        await asyncio.sleep(self.seconds)
        return ModerateImageResponse(suggestion=Suggestion.SUGGESTION_PASS)

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass
