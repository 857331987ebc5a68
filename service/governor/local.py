"""The in-process rate governor: spends a backend account's requests-per-second budget, and never more.

IMS allows `qps` requests per second per account and answers every excess with RequestLimitExceeded,
a billed-for-nothing round trip. The governor sends instead at an even pace, so a burst is smoothed
rather than rejected. Its pacing rules (the learned margin, the gentle backoff, the interactive share)
are `pacing.py`'s, the fleet's too; this module is their in-process slot store:

- **Never over the limit.** Grants are paced `period / rate` apart and, as a hard cap whatever the
  pace, no more than `qps` grants fall in any sliding `period` (a second plus the learned margin).
- **Fair to interactive callers.** Unary calls (INTERACTIVE) are served before stream and batch items
  (BATCH) while they hold less than `interactive_share` of the period's grants; batch items get the
  rest, and everything when no unary call waits. A stream therefore never starves unary callers, and
  unary callers never starve a stream. Asynchronous tasks (BACKGROUND) get only the slots nobody else
  waits for. A retry that would miss its deadline behind the first attempts of its priority goes
  before them.
- **Deadline-aware.** Waiting counts against the caller's deadline: a call that cannot get a slot in
  time fails at once with THROTTLED (RESOURCE_EXHAUSTED and RetryInfo), without spending quota.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable

from backends.errors import BackendError
from service.deadlines import Deadline
from service.governor.base import Priority, ahead_of, throttled
from service.governor.pacing import (
    CLOCK_TICK,
    DECREASE_FACTOR,
    START,
    LearnedMargin,
    interactive_first,
    recovered,
)
from service.telemetry import Metrics

__all__ = ["RateGovernor"]


class RateGovernor:
    def __init__(
        self,
        qps: int,
        *,
        interactive_share: float = 0.5,
        window: float = 1.0,
        margin: float = START,
        metrics: Metrics | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if qps < 1:
            raise ValueError("qps must be at least 1")
        self.qps = qps
        self._metrics = metrics
        self._sleep = sleep
        self.interactive_share = interactive_share
        self._window = window
        self._margin = LearnedMargin(qps, margin)
        self.rate = float(qps)
        self._last_change = 0.0
        self._next_grant = 0.0
        # (time, priority) of every grant in the last period: the hard cap and the fairness ledger.
        self._granted: deque[tuple[float, Priority]] = deque()
        self._waiting: dict[Priority, deque[asyncio.Future[None]]] = {p: deque() for p in Priority}
        self._dispatcher: asyncio.Task[None] | None = None
        self.grants = 0
        self.rejections = 0

    @property
    def period(self) -> float:
        """The window grants are counted in: a second (`window`) plus the learned margin."""
        return self._window * (1 + self._margin.value)

    @property
    def spacing(self) -> float:
        return self.period / self.rate

    @property
    def replica_pace(self) -> float:
        return self.rate

    def caller_weight(self, caller: str) -> float:
        return 1.0

    def share(self, fraction: float, name: str) -> RateGovernor:
        return RateGovernor(max(1, int(self.qps * fraction)), interactive_share=self.interactive_share)

    def start_after(self, delay: float) -> None:
        """No grant for `delay` seconds (a fleet replica's fallback waits out its reserved slots)."""
        self._next_grant = max(self._next_grant, asyncio.get_running_loop().time() + delay)

    def next_grant_in(self) -> float:
        """Seconds until the next grant may come (0 when one may come now)."""
        return max(0.0, self._next_grant - asyncio.get_running_loop().time())

    def waiting(self, priority: Priority) -> int:
        return sum(not f.done() for f in self._waiting[priority])

    async def acquire(self, priority: Priority, deadline: Deadline, *, retry: bool = False) -> None:
        loop = asyncio.get_running_loop()
        remaining = deadline.remaining()
        expected_wait = self._expected_wait(priority, first_in_line=False)
        # A retry queues as any waiter when it has the time: spread out, a crowded account's retries do
        # not all meet the same full second again. Only one that would miss its deadline goes first.
        first_in_line = retry and expected_wait >= remaining
        if first_in_line:
            expected_wait = self._expected_wait(priority, first_in_line=True)
        if expected_wait >= remaining:
            raise self._throttled(expected_wait, priority)
        started = loop.time()
        slot: asyncio.Future[None] = loop.create_future()
        queue = self._waiting[priority]
        if first_in_line:
            queue.appendleft(slot)
        else:
            queue.append(slot)
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = loop.create_task(self._dispatch())
        try:
            async with asyncio.timeout(remaining):
                await slot
        except TimeoutError:
            raise self._throttled(self.spacing * max(1, self.waiting(priority)), priority) from None
        else:
            if self._metrics is not None:
                self._metrics.governor_wait.record(
                    loop.time() - started, {"moderation.priority": priority.value}
                )
        finally:
            # Cancelled or timed out: the dispatcher skips a done future, so no slot is spent on it.
            slot.cancel()

    def _expected_wait(self, priority: Priority, *, first_in_line: bool) -> float:
        ahead = sum(self.waiting(p) for p in ahead_of(priority, first_in_line=first_in_line))
        return max(0.0, self._next_grant - asyncio.get_running_loop().time()) + ahead * self.spacing

    def drop_waiters(self, error: Exception) -> None:
        """Every call waiting for a slot gets `error` instead: this budget is dropped before they had one."""
        for queue in self._waiting.values():
            for slot in queue:
                if not slot.done():
                    slot.set_exception(error)
            queue.clear()

    def start(self) -> None:
        """Nothing to reach: the budget is this process's own."""

    async def aclose(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher

    def upstream_rate_limited(self, sent_at: float) -> None:
        """The backend said RequestLimitExceeded to a request sent at `sent_at` (loop time): the margin
        was too small, or somebody else spends this account's budget too."""
        now = asyncio.get_running_loop().time()
        if now - self._last_change >= self.period:
            if self._margin.rate_limited(sent_at, now):
                self.rate = max(1.0, self.rate * DECREASE_FACTOR)
            self._last_change = now

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._has_waiters():
            now = loop.time()
            while self._granted and self._granted[0][0] <= now - self.period:
                self._granted.popleft()
            self.rate, self._last_change = recovered(self.rate, self.qps, self._last_change, now, self.period)
            ready_at = self._next_grant
            if len(self._granted) >= self.qps:
                ready_at = max(ready_at, self._granted[0][0] + self.period)
            if ready_at > now + CLOCK_TICK:
                await self._sleep(ready_at - now)
                continue
            picked = self._pick()
            if picked is None:
                continue
            slot, priority = picked
            slot.set_result(None)
            self._granted.append((now, priority))
            # Paced from the previous grant's schedule, not from when the loop happened to wake us: late
            # wake-ups (about a millisecond each here) would otherwise add up to a tenth of the budget.
            on_schedule = now - self._next_grant < self.spacing
            self._next_grant = (self._next_grant if on_schedule else now) + self.spacing
            self.grants += 1
            self._margin.granted(now)
            if self._metrics is not None:
                self._metrics.governor_grants.add(1, {"moderation.priority": priority.value})

    def _has_waiters(self) -> bool:
        for queue in self._waiting.values():
            while queue and queue[0].done():
                queue.popleft()
        return any(self._waiting.values())

    def _pick(self) -> tuple[asyncio.Future[None], Priority] | None:
        if not self._has_waiters():
            return None
        interactive, batch = self._waiting[Priority.INTERACTIVE], self._waiting[Priority.BATCH]
        if interactive and batch:
            interactive_grants = sum(p is Priority.INTERACTIVE for _, p in self._granted)
            if not interactive_first(interactive_grants, len(self._granted), self.interactive_share):
                return batch.popleft(), Priority.BATCH
            return interactive.popleft(), Priority.INTERACTIVE
        if interactive:
            return interactive.popleft(), Priority.INTERACTIVE
        if batch:
            return batch.popleft(), Priority.BATCH
        background = self._waiting[Priority.BACKGROUND]
        if background:
            return background.popleft(), Priority.BACKGROUND
        return None

    def _throttled(self, retry_after: float, priority: Priority) -> BackendError:
        self.rejections += 1
        if self._metrics is not None:
            self._metrics.governor_rejections.add(1, {"moderation.priority": priority.value})
        return throttled(self.qps, retry_after)
