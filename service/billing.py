"""Cost metering: every call a paid backend bills, counted by backend, caller and biz_type.

A provider's packages cannot be split by caller; the gateway can. A backend attempt counts as billed
when it may have reached moderation: it gave a verdict, timed out or was abandoned (a provider bills a
call its client gave up on), or failed with an answer that is billed (an unavailable model, a failed
operation: the error table's `billed` column, `service.errors.KIND_POLICIES`). Refusals in front of
moderation (rate limit, quota, credentials, parameters) are not billed. Whether a backend bills, and
its price, its type declares (`backends.base.Billing`).
"""

from __future__ import annotations

import asyncio

from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse

from backends.base import Backend, Billing, WrappedBackend
from backends.errors import BackendError
from service.errors import KIND_POLICIES
from service.observe import CostMetrics

__all__ = ["BilledBackend", "metered"]


class BilledBackend(WrappedBackend):
    """The backend as it is, each billed attempt counted at its price."""

    def __init__(self, backend: Backend, billing: Billing, metrics: CostMetrics) -> None:
        super().__init__(backend)
        self._price = billing.per_call
        self._metrics = metrics

    async def moderate(self, request: ModerateImageRequest, *, timeout: float) -> ModerateImageResponse:
        try:
            result = await self._backend.moderate(request, timeout=timeout)
        except BackendError as error:
            if KIND_POLICIES[error.kind].billed:
                self._metrics.billed_call(self.name, request.biz_type, self._price)
            raise
        except asyncio.CancelledError:
            # Abandoned in flight (the deadline's timeout, a cancelled call): billed all the same.
            self._metrics.billed_call(self.name, request.biz_type, self._price)
            raise
        self._metrics.billed_call(self.name, request.biz_type, self._price)
        return result


def metered(backend: Backend, billing: Billing, metrics: CostMetrics) -> Backend:
    """`backend`, each call it bills counted by `metrics` at its `billing` price."""
    return BilledBackend(backend, billing, metrics)
