"""The failures a quota raises, as the retrier and the router know failures: `BackendError`s.

Raised in place of the backend call, so nothing was sent and nothing billed; the error table
(`service/errors.py`) turns them into the caller's status.
"""

from __future__ import annotations

from typing import Final

from backends.errors import BackendError, Kind

__all__ = ["QuotaExhausted", "quota_unavailable"]


class QuotaExhausted(BackendError):
    """A hard quota is used up until its period ends: `QuotaFailure` names it and its limit."""

    def __init__(self, quota: str, limit: int, period: str, reset_at: str, retry_after: float) -> None:
        super().__init__(
            Kind.CALLER_QUOTA_EXHAUSTED,
            f"this caller's quota {quota} ({limit} billed calls a {period}) is used up until {reset_at}",
            retry_after=retry_after,
        )
        self.quota: Final = quota
        self.limit: Final = limit
        self.period: Final = period


def quota_unavailable() -> BackendError:
    return BackendError(
        Kind.QUOTA_UNAVAILABLE,
        "the quota counts cannot be reached and the gateway refuses calls a quota governs until they can",
        retry_after=1.0,
    )
