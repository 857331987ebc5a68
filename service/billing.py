"""Cost metering: every call a paid backend (IMS) bills, counted by backend, caller and biz_type.

IMS cannot split its packages by caller; the gateway can. A backend attempt counts as billed when it
may have reached moderation: it gave a verdict, was abandoned (IMS bills a call its client gave up on),
or failed in a way the error table (`service.errors.KIND_POLICIES`) marks `billed`. Refusals in front
of moderation (rate limit, quota, credentials, parameters) are not billed.
"""

from __future__ import annotations

import asyncio
from typing import Final

from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse

from backends.base import Backend, WrappedBackend
from backends.errors import BackendError
from service.errors import KIND_POLICIES
from service.observe import CostMetrics

__all__ = ["BILLING_TYPES", "BilledBackend", "metered"]

# Backend types whose every call is paid for (a private deployment or the local backend is not).
BILLING_TYPES: Final = frozenset({"tencent"})


class BilledBackend(WrappedBackend):
    """The backend as it is, each billed attempt counted."""

    def __init__(self, backend: Backend, metrics: CostMetrics) -> None:
        super().__init__(backend)
        self._metrics = metrics

    async def moderate(self, request: ModerateImageRequest, *, timeout: float) -> ModerateImageResponse:
        try:
            result = await self._backend.moderate(request, timeout=timeout)
        except BackendError as error:
            if KIND_POLICIES[error.kind].billed:
                self._metrics.billed_call(self.name, request.biz_type)
            raise
        except asyncio.CancelledError:
            # Abandoned in flight (the deadline's timeout, a cancelled call): IMS bills it all the same.
            self._metrics.billed_call(self.name, request.biz_type)
            raise
        self._metrics.billed_call(self.name, request.biz_type)
        return result


def metered(backend: Backend, backend_type: str | None, metrics: CostMetrics) -> Backend:
    """`backend` counted by `metrics` when its type bills per call, else `backend` itself."""
    return BilledBackend(backend, metrics) if backend_type in BILLING_TYPES else backend
