"""What every rate governor shares: the priorities, the interface the retrier and router use, and the
one THROTTLED error a call gets when no slot can come before its deadline."""

from __future__ import annotations

import enum
from typing import Protocol

from backends.errors import BackendError, Kind
from service.deadlines import Deadline

__all__ = ["Governor", "Priority", "ahead_of", "throttled"]


class Priority(enum.Enum):
    INTERACTIVE = "interactive"
    BATCH = "batch"
    # Asynchronous tasks: served only from slots no unary call or stream item is waiting for.
    BACKGROUND = "background"


def ahead_of(priority: Priority, *, first_in_line: bool = False) -> tuple[Priority, ...]:
    """The priorities whose waiters are served before a new waiter of `priority`: its own included,
    unless the waiter goes first in line (a retry that would otherwise miss its deadline; the few such
    retries that may be ahead of it are not counted)."""
    order = tuple(Priority)
    return order[: order.index(priority) + (0 if first_in_line else 1)]


class Governor(Protocol):
    """Spends one budget of `qps` requests per second, and never more."""

    qps: int
    interactive_share: float
    grants: int
    rejections: int

    @property
    def rate(self) -> float:
        """The pace now: `qps`, or less after the backend said RequestLimitExceeded."""
        ...

    @property
    def replica_pace(self) -> float:
        """The part of the pace this replica's batch items may spend now (the rate when alone)."""
        ...

    def caller_weight(self, caller: str) -> float:
        """A caller's weight among this replica's callers (1; less when it is busy on other replicas
        of a fleet too, whose parts of the pace it also has)."""
        ...

    def start(self) -> None:
        """Begin contact with the schedule it shares, if any, before the first call needs a slot."""
        ...

    async def acquire(self, priority: Priority, deadline: Deadline, *, retry: bool = False) -> None:
        """Wait for a slot, or raise THROTTLED when none can come before the deadline. A `retry` that
        would miss its deadline behind the first attempts of its priority is served before them: it
        waited its turn once, and has only what is left."""
        ...

    def upstream_rate_limited(self, sent_at: float) -> None:
        """The backend said RequestLimitExceeded to a request sent at `sent_at` (loop time): the margin
        was too small for the path, or somebody else spends this account's budget too."""
        ...

    def share(self, fraction: float, name: str) -> Governor:
        """A slice of this budget (a route's, a caller's), taken before this governor's own slot."""
        ...

    async def aclose(self) -> None: ...


def throttled(qps: int, retry_after: float) -> BackendError:
    return BackendError(
        Kind.THROTTLED,
        f"the backend's rate budget ({qps}/s) has no slot before the deadline; retry in {retry_after:.2f} s",
        retry_after=retry_after,
    )
