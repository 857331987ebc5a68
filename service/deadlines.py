"""Time budgets: a call never outlives min(the caller's deadline, the backend service timeout)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

# The cloud moderation API's own service timeout: a call that has not answered in 15 s will not answer.
BACKEND_TIMEOUT = 15.0
# Kept back from the caller's deadline so our status, with its details, reaches the caller before
# the caller's own timer fires and hides it behind a bare DEADLINE_EXCEEDED.
RESPONSE_MARGIN = 0.010


@dataclass(frozen=True)
class Deadline:
    """A point on the event loop's clock, and whether the caller's deadline (not our cap) set it."""

    expires_at: float
    set_by_caller: bool

    @classmethod
    def for_call(
        cls,
        time_remaining: float | None,
        *,
        cap: float = BACKEND_TIMEOUT,
        margin: float = RESPONSE_MARGIN,
        received_at: float | None = None,
    ) -> Deadline:
        """`time_remaining` is grpc's `context.time_remaining()`: None when the caller set no deadline.

        The cap runs from `received_at` (when a stream item was read; by default now), so time spent
        waiting for a worker counts. Both end `margin` early so the answer leaves in time.
        """
        now = asyncio.get_running_loop().time()
        capped = (now if received_at is None else received_at) + cap - margin
        if time_remaining is not None and now + time_remaining - margin < capped:
            return cls(now + max(0.0, time_remaining - margin), set_by_caller=True)
        return cls(capped, set_by_caller=False)

    def remaining(self) -> float:
        return max(0.0, self.expires_at - asyncio.get_running_loop().time())

    def less(self, seconds: float) -> Deadline:
        """The same deadline `seconds` earlier: by when something must start to finish in time."""
        return Deadline(self.expires_at - seconds, self.set_by_caller)
