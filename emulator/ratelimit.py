"""The per-SecretId request-rate limit: a strict sliding one-second window, as IMS enforces it (no
request is admitted while `limit` others were admitted in the last second)."""

from __future__ import annotations

from collections import deque

from .errors import ImsError, rate_limit_error

WINDOW = 1.0
# IMS's default for ImageModeration; quoted in injected rate-limit messages when no limit is set.
DEFAULT_QPS_LIMIT = 100


class SlidingWindowLimiter:
    """Admission times per key over the last second. Not thread-safe: the caller serialises calls."""

    def __init__(self) -> None:
        self._admitted: dict[str, deque[float]] = {}

    def _window(self, key: str, now: float) -> deque[float]:
        times = self._admitted.setdefault(key, deque())
        while times and times[0] <= now - WINDOW:
            times.popleft()
        return times

    def admit(self, key: str, limit: int | None, now: float) -> None:
        """Record one request at `now`, or raise RequestLimitExceeded; a rejection is not recorded."""
        times = self._window(key, now)
        if limit is not None and len(times) >= limit:
            raise rate_limit_error(len(times) + 1, limit)
        times.append(now)

    def injected_error(self, key: str, limit: int | None, now: float) -> ImsError:
        """The RequestLimitExceeded an injected burst answers, worded from the current window."""
        current = len(self._window(key, now))
        return rate_limit_error(current, limit if limit is not None else DEFAULT_QPS_LIMIT)
