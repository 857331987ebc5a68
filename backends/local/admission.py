"""A capacity shared fairly between callers: the local backend's analysis threads and decode memory.

Waiting requests are granted in turn, one caller after another (round robin), and first come first
served within each caller, so one caller's flood queues behind itself rather than in front of everyone.
The caller at the head of the rotation is never skipped for a smaller request that would fit, so a
large image is not starved by a stream of small ones either. Event-loop only: a grant held by a worker
thread is released from the loop (`call_soon_threadsafe`) when the thread ends.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field

__all__ = ["FairBudget", "Grant", "NoRoom"]


class NoRoom(Exception):
    """The budget could not grant the amount before the time allowed ran out."""

    def __init__(self, *, ever: bool) -> None:
        super().__init__("no room in time" if ever else "more than the whole budget")
        # False when the amount exceeds the whole capacity: waiting can never help.
        self.ever = ever


@dataclass(eq=False)
class _Waiter:
    amount: int
    granted: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Grant:
    """A share of the budget, held until `release()` (which may be called more than once)."""

    def __init__(self, budget: FairBudget, amount: int) -> None:
        self._budget: FairBudget | None = budget
        self.amount = amount

    def release(self) -> None:
        if self._budget is not None:
            budget, self._budget = self._budget, None
            budget._give_back(self.amount)


class FairBudget:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._used = 0
        # Callers with waiting requests, in rotation order (a dict keeps insertion order).
        self._queues: dict[Hashable, deque[_Waiter]] = {}

    @property
    def in_use(self) -> int:
        return self._used

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    async def acquire(self, caller: Hashable, amount: int, *, timeout: float) -> Grant:
        """`amount` of the capacity for `caller`, waiting at most `timeout` seconds; NoRoom otherwise."""
        if amount > self.capacity:
            raise NoRoom(ever=False)
        if not self._queues and self._used + amount <= self.capacity:
            self._used += amount
            return Grant(self, amount)
        waiter = _Waiter(amount)
        self._queues.setdefault(caller, deque()).append(waiter)
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await waiter.granted
        except BaseException as exc:
            self._withdraw(caller, waiter)
            if isinstance(exc, TimeoutError):
                raise NoRoom(ever=True) from None
            raise
        return Grant(self, amount)

    def _withdraw(self, caller: Hashable, waiter: _Waiter) -> None:
        """A waiter that gave up (timed out or cancelled), possibly just after it was granted."""
        if waiter.granted.done() and not waiter.granted.cancelled():
            self._give_back(waiter.amount)
            return
        queue = self._queues.get(caller)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._queues[caller]
        # The head of the rotation may have been the one blocking others.
        self._grant()

    def _give_back(self, amount: int) -> None:
        self._used -= amount
        self._grant()

    def _grant(self) -> None:
        while self._queues:
            caller, queue = next(iter(self._queues.items()))
            head = queue[0]
            # A cancelled waiter whose task has not run yet to withdraw it: nobody to grant.
            if not head.granted.cancelled() and self._used + head.amount > self.capacity:
                return
            queue.popleft()
            # To the back of the rotation, if the caller has more waiting.
            del self._queues[caller]
            if queue:
                self._queues[caller] = queue
            if not head.granted.cancelled():
                self._used += head.amount
                head.granted.set_result(None)
