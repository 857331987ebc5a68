"""When to retry, how long to wait, and how long each attempt may take, for one call's deadline.

Only what the gateway marks retryable is retried (see `errors.RETRYABLE_REASONS`). Each wait is the
longer of the gateway's `RetryInfo` (capped: a server cannot park the client) and a full-jitter
exponential backoff; a retry whose wait would
reach the caller's deadline is not made, and the last error is raised at once instead. Each attempt's
timeout shrinks toward the deadline.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from moderation_client.errors import SERVER_DRAINING, ModerationError


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3  # retries of one unary call, after its first attempt
    max_resends: int = 5  # new streams opened after SERVER_DRAINING, for one stream helper call
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0
    # The gateway asks for about 1 s; a longer RetryInfo is cut to this, whatever the server says.
    max_server_delay: float = 5.0

    def backoff(self, retry: int) -> float:
        """Full jitter: uniform up to the exponential bound of the `retry`-th retry (1-based)."""
        bound = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return random.uniform(0.0, bound)


class CallBudget:
    """One call's deadline (retries and resends included) and the retries it has left."""

    def __init__(self, policy: RetryPolicy, timeout: float | None, attempt_timeout: float | None) -> None:
        self._policy = policy
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._attempt_timeout = attempt_timeout
        self._retries = 0

    def remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def attempt_timeout(self) -> float | None:
        """The next attempt's timeout: the per-attempt limit, never past the call's deadline."""
        limits = [limit for limit in (self.remaining(), self._attempt_timeout) if limit is not None]
        return min(limits, default=None)

    def retry_delay(self, error: ModerationError) -> float:
        """Seconds to wait before retrying a failed unary call; raises `error` when it is not retried."""
        return self._delay(error, retryable=error.retryable, limit=self._policy.max_retries)

    def resend_delay(self, error: ModerationError) -> float:
        """Seconds to wait before opening a new stream; raises `error` unless the gateway was draining."""
        draining = error.retryable and error.reason == SERVER_DRAINING
        return self._delay(error, retryable=draining, limit=self._policy.max_resends)

    def _delay(self, error: ModerationError, *, retryable: bool, limit: int) -> float:
        if not retryable or self._retries >= limit:
            raise error
        self._retries += 1
        asked = min(error.retry_delay or 0.0, self._policy.max_server_delay)
        delay = max(asked, self._policy.backoff(self._retries))
        remaining = self.remaining()
        if remaining is not None and delay >= remaining:
            raise error
        return delay
