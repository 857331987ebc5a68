"""How many calls and items a replica takes in: as many as its share of the budget's pace can serve
within a short horizon, shared equally between the callers that want more.

A stream or batch item is read from its stream only once the intake has room for it, so a caller
sending faster than the budget waits in its own HTTP/2 flow-control window, where no deadline runs, and
not in a queue inside the gateway where its items would age until they could no longer finish. A unary
call that goes to the backend takes room too (its message has arrived: it waits here, within its
deadline), so unary calls never crowd out the items taken in for the pace. Room is
`pace x (typical latency + INTAKE_HORIZON)` (Little's law: what the pace keeps in flight, and a
horizon's worth queued for slots); the stream window, the caller's bulkhead and the server's item cap
stay as caps. When room frees, it goes to the waiting caller holding the least for its weight, so a
caller with ten streams gets no more than a caller with one; in a fleet, a caller busy on several
replicas weighs less on each (`Governor.caller_weight`), so every caller gets an equal part fleet-wide.
Within a caller, its unary calls go first while they hold less than their interactive share of its
room (`pacing.interactive_first`, the governor's rule).
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from service.governor import Priority
from service.governor.pacing import interactive_first

__all__ = ["INTAKE_HORIZON", "Intake", "IntakeSlot", "intake_limit"]

# How long, at the pace, the items taken in but not yet sent may last: what an item waits for its slot.
# Two seconds, not one: on a loaded machine each item also spends time in the gateway around its attempt,
# and a tight intake then starves the pace (the three-replica fleet test spent 16-18 of 40/s with 1 s).
INTAKE_HORIZON = 2.0


class Intake:
    def __init__(
        self,
        limit: Callable[[], int],
        weight: Callable[[str], float] = lambda caller: 1.0,
        interactive_share: float = 0.5,
    ) -> None:
        self._limit = limit
        self._weight = weight
        self._interactive_share = interactive_share
        self._held: Counter[str] = Counter()
        # Of each caller's room, what its unary calls hold.
        self._interactive: Counter[str] = Counter()
        self._waiting: dict[str, dict[Priority, deque[asyncio.Future[None]]]] = {}

    @property
    def held(self) -> int:
        return self._held.total()

    def slot(self, caller: str, priority: Priority = Priority.BATCH) -> IntakeSlot:
        """The caller's way in, shaped as a semaphore."""
        return IntakeSlot(self, caller, priority)

    async def enter(self, caller: str, priority: Priority = Priority.BATCH) -> None:
        if self._room_now(caller):
            self._take(caller, priority)
            return
        room: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queues = self._waiting.setdefault(caller, {p: deque() for p in Priority})
        queues[priority].append(room)
        try:
            await room
        except asyncio.CancelledError:
            if room.done() and not room.cancelled():
                self.leave(caller, priority)  # the room came with the cancellation: give it on
            raise

    async def enter_within(self, caller: str, priority: Priority, seconds: float) -> bool:
        """`enter`, giving up after `seconds`: False when no room came in time."""
        if seconds <= 0:
            return False
        if self._room_now(caller):
            # The usual case: no wait, so no timer to arm and cancel.
            self._take(caller, priority)
            return True
        try:
            async with asyncio.timeout(seconds):
                await self.enter(caller, priority)
        except TimeoutError:
            return False
        return True

    def _room_now(self, caller: str) -> bool:
        return (not self._waiting and self.held < self._limit()) or self._under_its_part(caller)

    def _under_its_part(self, caller: str) -> bool:
        """Whether the caller holds less than its weighted part of the room: it enters even when the
        intake is full. A caller with one stream asks for one item at a time, and would otherwise find
        the room it frees taken by the caller with ten streams before it asks again; the others enter
        only below the limit, so the intake holds at most one caller's part more than its limit."""
        active = {*self._held, *self._waiting, caller}
        weights = sum(self._weight(name) for name in active)
        return self._held[caller] < self._limit() * self._weight(caller) / weights - 1

    def _take(self, caller: str, priority: Priority) -> None:
        self._held[caller] += 1
        if priority is Priority.INTERACTIVE:
            self._interactive[caller] += 1

    def leave(self, caller: str, priority: Priority = Priority.BATCH) -> None:
        for counter in (self._held, *([self._interactive] if priority is Priority.INTERACTIVE else [])):
            counter[caller] -= 1
            if counter[caller] <= 0:
                del counter[caller]
        self._admit()

    def _admit(self) -> None:
        while self._waiting and self.held < self._limit():
            caller = min(self._waiting, key=lambda name: self._held[name] / self._weight(name))
            queues = self._waiting[caller]
            priority = self._next_priority(caller, queues)
            room = queues[priority].popleft()
            if not any(queues.values()):
                del self._waiting[caller]
            if room.done():
                continue  # cancelled while waiting
            room.set_result(None)
            self._take(caller, priority)

    def _next_priority(self, caller: str, queues: dict[Priority, deque[asyncio.Future[None]]]) -> Priority:
        interactive, batch = queues[Priority.INTERACTIVE], queues[Priority.BATCH]
        if interactive and batch:
            first = interactive_first(self._interactive[caller], self._held[caller], self._interactive_share)
            return Priority.INTERACTIVE if first else Priority.BATCH
        return Priority.INTERACTIVE if interactive else Priority.BATCH


@dataclass(frozen=True)
class IntakeSlot:
    intake: Intake
    caller: str
    priority: Priority = Priority.BATCH

    async def acquire(self) -> None:
        await self.intake.enter(self.caller, self.priority)

    async def acquire_within(self, seconds: float) -> bool:
        return await self.intake.enter_within(self.caller, self.priority, seconds)

    def release(self) -> None:
        self.intake.leave(self.caller, self.priority)


def intake_limit(pace: float, typical_latency: float, horizon: float = INTAKE_HORIZON) -> int:
    """The items `pace` per second keep busy for `typical_latency`, plus a horizon's worth waiting."""
    return max(1, math.ceil(pace * (typical_latency + horizon)))
