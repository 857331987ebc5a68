"""Counters of what the emulator saw and did, safe to read from the test thread while it serves."""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any

from .ratelimit import SlidingSecond

RECEIVED_LIMIT = 1000
# About 16 minutes at IMS's 100 requests/s: a bench phase's worth, bounded for a long-running emulator.
ARRIVALS_LIMIT = 100_000


class Stats:
    """Every reader returns a snapshot taken under the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clear()

    def reset(self) -> None:
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        self._requests = 0
        self._billed = 0
        self._rate_limited = 0
        self._aborted = 0
        self._errors_by_code: Counter[str] = Counter()
        self._faults_injected: Counter[str] = Counter()
        self._authenticated: Counter[str] = Counter()
        self._admitted = SlidingSecond()
        self._max_in_one_second = 0
        self._latest_arrival: float | None = None
        self._in_flight = 0
        self._max_in_flight = 0
        self._received: deque[tuple[float, dict[str, Any]]] = deque(maxlen=RECEIVED_LIMIT)
        self._arrivals: deque[tuple[float, int]] = deque(maxlen=ARRIVALS_LIMIT)

    # --- what tests read -------------------------------------------------------------------------

    @property
    def requests(self) -> int:
        """Every HTTP request received, whatever became of it."""
        with self._lock:
            return self._requests

    @property
    def billed(self) -> int:
        """Requests that reached moderation (authenticated, under the limit, valid): IMS bills these."""
        with self._lock:
            return self._billed

    @property
    def rate_limited(self) -> int:
        """Requests answered RequestLimitExceeded (by the limit or by an injected fault)."""
        with self._lock:
            return self._rate_limited

    @property
    def aborted(self) -> int:
        """Requests whose client went away before the answer was sent."""
        with self._lock:
            return self._aborted

    @property
    def errors_by_code(self) -> dict[str, int]:
        """IMS error envelopes sent, by code."""
        with self._lock:
            return dict(self._errors_by_code)

    @property
    def authenticated(self) -> dict[str, int]:
        """Requests that passed authentication, by the identity they counted against (a SecretId)."""
        with self._lock:
            return dict(self._authenticated)

    @property
    def faults_injected(self) -> dict[str, int]:
        """Injected faults, by kind ("error_code" for bare codes from `fail_next`)."""
        with self._lock:
            return dict(self._faults_injected)

    @property
    def in_flight(self) -> int:
        """Billed requests being worked on (or waited on) now."""
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The most billed requests being worked on (or waited on) at the same time."""
        with self._lock:
            return self._max_in_flight

    @property
    def max_in_one_second(self) -> int:
        """The most requests admitted past the rate limit within any sliding one-second window."""
        with self._lock:
            return self._max_in_one_second

    @property
    def latest_arrival(self) -> float | None:
        """The arrival stamp (monotonic time) the rate limit judged the latest admitted request by."""
        with self._lock:
            return self._latest_arrival

    @property
    def received(self) -> list[tuple[float, dict[str, Any]]]:
        """(time.time(), JSON body) of the last RECEIVED_LIMIT requests whose body was a JSON object."""
        with self._lock:
            return list(self._received)

    @property
    def arrivals(self) -> list[tuple[float, int]]:
        """(arrival stamp, the client's TCP port) of the last ARRIVALS_LIMIT authenticated requests,
        admitted or not: when the rate limit judged each to arrive, and which connection carried it."""
        with self._lock:
            return list(self._arrivals)

    # --- what the server records -----------------------------------------------------------------

    def record_request(self) -> None:
        with self._lock:
            self._requests += 1

    def record_received(self, when: float, params: dict[str, Any]) -> None:
        with self._lock:
            self._received.append((when, params))

    def record_arrival(self, stamp: float, port: int) -> None:
        """`stamp`: the arrival the rate limit judges, in monotonic time; `port`: the client's."""
        with self._lock:
            self._arrivals.append((stamp, port))

    def record_authenticated(self, identity: str) -> None:
        with self._lock:
            self._authenticated[identity] += 1

    def record_admitted(self, stamp: float) -> None:
        """`stamp`: the request's arrival, in monotonic time."""
        with self._lock:
            self._max_in_one_second = max(self._max_in_one_second, self._admitted.busiest_with(stamp))
            self._admitted.add(stamp)
            self._latest_arrival = stamp

    def record_billed(self) -> None:
        """A billed request starts; `record_finished` ends it."""
        with self._lock:
            self._billed += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def record_finished(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def record_error(self, code: str, *, rate_limited: bool) -> None:
        with self._lock:
            self._errors_by_code[code] += 1
            self._rate_limited += rate_limited

    def record_fault(self, kind: str) -> None:
        with self._lock:
            self._faults_injected[kind] += 1

    def record_aborted(self) -> None:
        with self._lock:
            self._aborted += 1
