"""The seam between the gRPC service and whatever does the moderation.

A backend takes the request message and returns the response message (the proto messages are the data
model), filling the result fields, `backend` and `request_id`; the service fills `attempts`. A
backend makes exactly one attempt per call: retries, deadlines and rate limits are the caller's policy,
so every backend gets them alike. Backends raise only `BackendError` and never import grpc.

Each backend declares the images it takes (`image_limits`, checked and fitted to after routing) and its
`Fingerprint`: what its verdicts depend on, as hashes. The verdict cache keys by the fingerprints of a
route's chain, so a backend that changes (another type, endpoint, region or account, another policy or
library file) never answers from verdicts the old one gave.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse

from backends.image_limits import ImageLimits

__all__ = ["SECOND_REQUEST_SLOT", "Backend", "Billing", "Fingerprint"]


@dataclass(frozen=True)
class Billing:
    """What a paid backend's provider charges: `price_per_10k` (CNY) per 10,000 calls it bills.

    A backend type declares it through its options (`BackendOptions.billing`): the gateway meters the
    calls of a backend that has one (billed calls, estimated cost) and holds them to callers' quotas.
    """

    price_per_10k: float

    @property
    def per_call(self) -> float:
        return self.price_per_10k / 10_000


@dataclass(frozen=True)
class Fingerprint:
    """What a backend's verdicts depend on, hashed: no secret, no file content, only digests.

    `account`: whose account the backend spends (a hash of it; "" for a backend without one), the
    namespace of its verdicts in Redis. `digest`: the backend type, the account and every other part
    that can change a verdict (endpoint, region, policy and library files' content, limits).
    """

    account: str
    digest: str

    @classmethod
    def of(cls, backend_type: str, *parts: object, account: str | None = None) -> Fingerprint:
        """`parts` must spell themselves the same in every process (str, bytes, numbers, tuples)."""
        hashed_account = _digest(backend_type, account)[:32] if account else ""
        return cls(hashed_account, _digest(backend_type, hashed_account, *parts))


def _digest(*parts: object) -> str:
    # A tuple's repr quotes and escapes each string and bytes, so no two tuples spell the same text.
    return hashlib.sha256(repr(parts).encode()).hexdigest()


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
    def fingerprint(self) -> Fingerprint:
        """What this backend's verdicts depend on; computed when it is built and when it reloads a file
        its verdicts depend on, never per call."""
        ...

    @property
    def concurrency(self) -> int | None:
        """Calls worth accepting at once, for in-process backends; None when the backend is remote."""
        ...

    @property
    def image_limits(self) -> ImageLimits:
        """The images this backend takes: the gateway checks and fits each request's image to its
        route's backends' limits before any is called."""
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


class WrappedBackend:
    """A backend as it is: the base of wrappers that add something around its calls (metering, quotas)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    @property
    def name(self) -> str:
        return self._backend.name

    @property
    def fingerprint(self) -> Fingerprint:
        return self._backend.fingerprint

    @property
    def concurrency(self) -> int | None:
        return self._backend.concurrency

    @property
    def image_limits(self) -> ImageLimits:
        return self._backend.image_limits

    async def start(self) -> None:
        await self._backend.start()

    async def moderate(self, request: ModerateImageRequest, *, timeout: float) -> ModerateImageResponse:
        return await self._backend.moderate(request, timeout=timeout)

    async def aclose(self) -> None:
        await self._backend.aclose()
