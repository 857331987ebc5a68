"""A billed backend behind the quota gate: each attempt reserves before it is sent and settles after.

An attempt the backend bills (`service.billing`: a verdict, a timeout, an abandoned call, a
billed failure) keeps its unit; any other failure gives it back. Nothing else counts: cache hits and
coalesced answers never reach a backend, and validation failures and refusals never reach this one.
"""

from __future__ import annotations

from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse

from backends.base import Backend, WrappedBackend
from backends.errors import BackendError
from service.auth import CALLER
from service.errors import KIND_POLICIES
from service.quotas.guard import QuotaGuard

__all__ = ["QuotaGovernedBackend", "governed"]


class QuotaGovernedBackend(WrappedBackend):
    def __init__(self, backend: Backend, gate: QuotaGuard) -> None:
        super().__init__(backend)
        self._gate = gate

    async def start(self) -> None:
        await self._gate.start()
        await self._backend.start()

    async def moderate(self, request: ModerateImageRequest, *, timeout: float) -> ModerateImageResponse:
        ticket = await self._gate.reserve(CALLER.get(), request.biz_type)
        try:
            return await self._backend.moderate(request, timeout=timeout)
        except BackendError as error:
            if not KIND_POLICIES[error.kind].billed:
                await ticket.release()
            raise
        # Anything else (an abandoned call, which is billed all the same) keeps its unit.

    async def aclose(self) -> None:
        await self._gate.aclose()
        await self._backend.aclose()


def governed(backend: Backend, gate: QuotaGuard | None) -> Backend:
    """A backend whose calls are billed behind `gate` when quotas are configured, else itself."""
    return QuotaGovernedBackend(backend, gate) if gate is not None else backend
