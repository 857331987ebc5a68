"""`GetUsage`: the calling caller's own quotas, never another's (the caller is the authenticated one)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from grpc_status import rpc_status
from moderation.v1.moderation_service_pb2 import GetUsageRequest, GetUsageResponse, QuotaUsage

from common.scrub import Scrubber
from service.auth import CALLER
from service.errors import CallFailure, failure_status
from service.quotas.guard import QuotaGuard
from service.quotas.refusal import quota_unavailable
from service.quotas.store import StoreUnavailable

__all__ = ["UsageRpc"]


class UsageRpc:
    def __init__(self, guard: QuotaGuard | None, outward: Scrubber) -> None:
        """`outward`: the gateway's scrubber, which the refusal passes like every status."""
        self._guard = guard
        self._outward = outward

    async def get_usage(
        self, request: GetUsageRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> GetUsageResponse:
        if self._guard is None:
            return GetUsageResponse()
        try:
            rows = await self._guard.usage(CALLER.get())
        except StoreUnavailable:
            rich = rpc_status.to_status(
                failure_status(CallFailure(quota_unavailable(), backend="", attempts=0), self._outward)
            )
            await context.abort(rich.code, rich.details, rich.trailing_metadata)
        response = GetUsageResponse()
        for row in rows:
            start = timestamp_pb2.Timestamp()
            start.FromDatetime(row.window.start)
            response.usage.append(
                QuotaUsage(
                    quota=row.quota.name,
                    period_start=start,
                    used=row.used,
                    limit=row.quota.limit,
                    remaining=max(0, row.quota.limit - row.used),
                )
            )
        return response
