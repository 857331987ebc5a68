"""Backends in-process, for the unit tests of what stands in front of one."""

from __future__ import annotations

import asyncio

from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse, Suggestion

from backends.base import Fingerprint
from backends.errors import BackendError
from backends.image_limits import IMS_IMAGE_LIMITS, ImageLimits


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


class NamedBackend(SlowBackend):
    """SlowBackend under a name of its own, with a fingerprint a test may change (a reload)."""

    def __init__(self, name: str, limits: ImageLimits = IMS_IMAGE_LIMITS) -> None:
        super().__init__(0.0)
        self.name = name
        self.fingerprint = Fingerprint.of("named", name)
        self.image_limits = limits

    async def moderate(self, request: ModerateImageRequest, *, timeout: float) -> ModerateImageResponse:
        return ModerateImageResponse(suggestion=Suggestion.SUGGESTION_PASS, backend=self.name)


class ScriptedBackend:
    """Answers each attempt from a script: an error to raise, or a delay before passing."""

    name = "scripted"
    fingerprint = Fingerprint.of("scripted")
    image_limits = IMS_IMAGE_LIMITS
    concurrency = None

    def __init__(self, *script: BackendError | float) -> None:
        self.script = list(script)
        self.calls = 0
        self.timeouts: list[float] = []

    async def moderate(self, request: ModerateImageRequest, *, timeout: float) -> ModerateImageResponse:
        self.calls += 1
        self.timeouts.append(timeout)
        step = self.script.pop(0) if self.script else 0.0
        if isinstance(step, BackendError):
            raise step
        await asyncio.sleep(step)
        return ModerateImageResponse(suggestion=Suggestion.SUGGESTION_PASS)

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass
