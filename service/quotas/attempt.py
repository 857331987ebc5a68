"""A billed backend's quota as its retry loop takes it: a unit reserved before each attempt, before the
attempt's rate slot, and settled after.

Reserved first, so a caller past a hard quota is refused before it waits for (and spends) a slot of the
rate budget the other callers share. A unit whose attempt is never sent (no slot with the time to
finish) goes back; so does one whose attempt the backend does not bill (the error table's `billed`). A
billed failure (a timeout, an abandoned call, a billed error) and an answer keep theirs. Nothing else
counts: cache hits and coalesced answers never reach a backend, and validation failures never reach
its retry loop.
"""

from __future__ import annotations

from moderation.v1.moderation_service_pb2 import ModerateImageRequest

from backends.base import Billing
from backends.errors import BackendError
from service.auth import CALLER
from service.errors import KIND_POLICIES
from service.quotas.guard import QuotaGate, Ticket

__all__ = ["AttemptQuota", "attempt_quota"]


class AttemptQuota:
    def __init__(self, gate: QuotaGate) -> None:
        self._gate = gate

    async def reserve(self, request: ModerateImageRequest) -> Ticket:
        """Raises `QuotaExhausted` past a hard quota, or a QUOTA_UNAVAILABLE `BackendError`."""
        return await self._gate.reserve(CALLER.get(), request.biz_type)

    @staticmethod
    async def settle(ticket: Ticket, error: BackendError) -> None:
        """After an attempt failed with `error`: its unit back unless the backend bills that failure."""
        if not KIND_POLICIES[error.kind].billed:
            await ticket.release()


def attempt_quota(billing: Billing | None, gate: QuotaGate | None) -> AttemptQuota | None:
    """The quota of a backend that bills per call (when quotas are configured), else None."""
    return AttemptQuota(gate) if gate is not None and billing is not None else None
