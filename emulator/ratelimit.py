"""The per-SecretId request-rate limit: a strict sliding one-second window, as IMS enforces it (no
request is admitted while `limit` others were admitted in the last second).

Times are arrival stamps: when the request reached the emulator's socket plus the simulated network
delay, not when a handler thread got round to it. Handler threads may therefore admit stamps slightly
out of order, so a window is judged by every one-second span that holds the stamp, not only the one
ending at it: never laxer than IMS.
"""

from __future__ import annotations

import bisect

from .errors import ImsError, rate_limit_error

WINDOW = 1.0
# IMS's default for ImageModeration; quoted in injected rate-limit messages when no limit is set.
DEFAULT_QPS_LIMIT = 100
# Stamps older than this behind the newest cannot share a window with any request still to come.
_KEPT = 2 * WINDOW


class SlidingSecond:
    """Arrival stamps, sorted, and the most of them in any one-second span. Not thread-safe."""

    def __init__(self) -> None:
        self._times: list[float] = []

    def busiest_with(self, stamp: float) -> int:
        """The most stamps any one-second span holding `stamp` would hold, `stamp` included."""
        times = self._times
        if times and times[-1] - _KEPT > times[0]:
            del times[: bisect.bisect_left(times, times[-1] - _KEPT)]
        # Each span worth checking ends at `stamp` or at a later stamp less than a second after it.
        start = bisect.bisect_right(times, stamp - WINDOW)
        ends = [stamp, *times[bisect.bisect_right(times, stamp) : bisect.bisect_left(times, stamp + WINDOW)]]
        return max(
            bisect.bisect_right(times, end) - bisect.bisect_right(times, end - WINDOW, lo=start) + 1
            for end in ends
        )

    def add(self, stamp: float) -> None:
        bisect.insort(self._times, stamp)


class SlidingWindowLimiter:
    """Arrival stamps per key over the last second. Not thread-safe: the caller serialises calls."""

    def __init__(self) -> None:
        self._admitted: dict[str, SlidingSecond] = {}

    def admit(self, key: str, limit: int | None, stamp: float) -> None:
        """Record one request arriving at `stamp`, or raise RequestLimitExceeded; a rejection is not
        recorded."""
        window = self._admitted.setdefault(key, SlidingSecond())
        busiest = window.busiest_with(stamp)
        if limit is not None and busiest > limit:
            raise rate_limit_error(busiest, limit)
        window.add(stamp)

    def injected_error(self, key: str, limit: int | None, stamp: float) -> ImsError:
        """The RequestLimitExceeded an injected burst answers, worded from the current window."""
        current = self._admitted.setdefault(key, SlidingSecond()).busiest_with(stamp) - 1
        return rate_limit_error(current, limit if limit is not None else DEFAULT_QPS_LIMIT)
