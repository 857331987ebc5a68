"""The seam between the gRPC service and whatever does the moderation.

A backend takes the request message and returns the response message (the proto messages are the data
model), filling the result fields, `backend` and `request_id`; the service fills `attempts`. A
backend makes exactly one attempt per call: retries, deadlines and rate limits are the caller's policy,
so every backend gets them alike. Backends raise only `BackendError` and never import grpc.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Protocol

from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse

# Set by the caller's retry loop for the length of one attempt: a backend that must send a second request
# within it (tencent's resend after a revoked key) awaits this first, so that request takes its rate slot
# like any other. It raises `BackendError` (THROTTLED) when no slot leaves the time to finish.
SECOND_REQUEST_SLOT: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar(
    "SECOND_REQUEST_SLOT", default=None
)


class Backend(Protocol):
    @property
    def name(self) -> str:
        """A stable, configured name, reported to callers as the `backend` that answered."""
        ...

    @property
    def concurrency(self) -> int | None:
        """Calls worth accepting at once, for in-process backends; None when the backend is remote."""
        ...

    async def start(self) -> None:
        """Get ready to serve (load models, warm up); the server reports NOT_SERVING until it returns."""
        ...

    async def moderate(self, request: ModerateImageRequest, *, timeout: float) -> ModerateImageResponse:
        """One attempt, abandoned after `timeout` seconds with `BackendError(Kind.TIMEOUT)`."""
        ...

    async def aclose(self) -> None:
        """Release connections and workers; called once at shutdown."""
        ...
