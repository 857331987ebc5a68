"""The fleet governor: every replica takes its slots from one schedule in Redis (`schedule.py`).

- **One even pace for the fleet.** A replica reserves slots for the callers it has waiting (batch items
  no further than `HORIZON` ahead) and grants each at its time, to an interactive caller first while
  they are within their share (`pacing.py`, as the in-process governor). The pace is Redis's, so
  replicas' clocks never matter.
- **Parts with one job each.** `membership.py`: the calls to Redis, heartbeats and the estimate of
  Redis's clock; `fallback.py`: what the replica spends while Redis is away, and its way back;
  `schedule.py`: the slot store in Redis. This module waits callers on the slots.
- **Backoff.** RequestLimitExceeded widens the fleet's margin, and lowers its pace gently if the margin
  cannot explain it (at most once a period fleet-wide); both come back slowly (`pacing.py`).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import redis.asyncio as redis

from backends.calls import CALLER
from backends.errors import BackendError
from common.cancellation import end_if_cancelled
from service.deadlines import Deadline
from service.governor.base import Priority, ahead_of, throttled
from service.governor.fallback import (
    HEARTBEAT_INTERVAL,
    HEARTBEAT_TIMEOUT,
    HORIZON,
    SILENT_AFTER,
    Fallback,
    ShareDropped,
)
from service.governor.membership import Membership, Unreachable
from service.governor.pacing import CLOCK_TICK, DECREASE_FACTOR, INCREASE_STEP, interactive_first
from service.governor.schedule import Schedule, ScheduleParameters
from service.telemetry import Metrics

__all__ = ["FleetGovernor", "fleet_governor", "fleet_parameters"]

log = logging.getLogger(__name__)

# The most slots asked for in one round trip.
MAX_RESERVE = 32
# A slice's heartbeats stop after this long without a call (the next call starts them again).
IDLE_SLICE = 30.0
# A slot granted late crowds the next one as network jitter does: later than this share of the learned
# margin (in time: 2 % of a second is 20 ms) it is dropped, so lateness takes at most half of the margin's
# allowance and a busy event loop's late wake-ups draw the rate limit that widens the margin, rather than
# losing slot after slot (a fixed 3 ms dropped 15 % of the slots at load average 10).
STALE_SHARE_OF_MARGIN = 0.5
STALE_SLOT_LEAST = 0.003


def fleet_parameters(qps: int, interactive_share: float) -> ScheduleParameters:
    return ScheduleParameters(
        qps=qps,
        window=1.0,
        increase_step=INCREASE_STEP,
        decrease_factor=DECREASE_FACTOR,
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
        silent_after=SILENT_AFTER,
        horizon=HORIZON,
        interactive_share=interactive_share,
    )


class _Refused(Exception):
    """Redis was lost: the waiter takes its slot from the fallback share instead."""


class FleetGovernor:
    def __init__(
        self,
        schedule: Schedule,
        *,
        name: str,
        metrics: Metrics | None = None,
        clock: Callable[[], float] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
        expected_replicas: int | None = None,
        idle_after: float | None = None,
        replicas_known_to: Callable[[], int | None] | None = None,
    ) -> None:
        parameters = schedule.parameters
        self.qps = parameters.qps
        self.interactive_share = parameters.interactive_share
        self.name = name
        self.grants = 0
        self.rejections = 0
        self._membership = Membership(schedule, name=name, metrics=metrics, clock=clock)
        self._membership.on_clock_step = self._clock_stepped
        self._fallback = Fallback(
            name,
            self.qps,
            interactive_share=self.interactive_share,
            metrics=metrics,
            expected_replicas=expected_replicas,
        )
        # A slice (a caller's, a route's) stops its heartbeats after this long without a call: a caller
        # gone must not keep writing to Redis. None: the budget itself, which beats for as long as it lives.
        self._idle_after = idle_after
        # A slice made during an outage never reaches Redis itself, but the budget it slices did: the
        # replicas that budget last heard of size its fallback share, not a first-contact hold.
        self._replicas_known_to = replicas_known_to
        self._last_acquire = 0.0
        # Set by aclose: the heartbeats stop at their next turn even if a cancellation never reaches them
        # (redis-py can swallow one that lands mid-command, and `asyncio.timeout` one that lands as it
        # expires).
        self._closed = False
        self._expected_replicas = expected_replicas
        self._metrics = metrics
        # Each waiter with its deadline and its caller (hashed: the name is never written to Redis).
        self._waiting: dict[Priority, deque[tuple[asyncio.Future[None], Deadline, str]]] = {
            p: deque() for p in Priority
        }
        # The slots reserved and not yet granted: (this replica's time, the margin they were spaced under).
        self._slots: list[tuple[float, float]] = []
        # (time, priority) of this replica's grants in the last period: the local fairness ledger.
        self._granted: deque[tuple[float, Priority]] = deque()
        self._ask_again_at = 0.0
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._reserving: asyncio.Task[None] | None = None
        self._heartbeats: asyncio.Task[None] | None = None
        self._reports: set[asyncio.Task[None]] = set()
        self._on_close = on_close
        if metrics is not None:
            metrics.watch_fleet(self)

    # --- what the metrics and the router read ---------------------------------------------------

    @property
    def replicas(self) -> int:
        return self._membership.replicas

    @property
    def fallback(self) -> bool:
        return self._fallback.active

    @property
    def rate(self) -> float:
        """The fleet-wide pace as Redis last said (or the fallback share's, while Redis is away)."""
        share = self._fallback.rate
        return share if share is not None else self._membership.rate

    @property
    def period(self) -> float:
        return self._membership.period

    @property
    def spacing(self) -> float:
        return self.period / self._membership.rate

    @property
    def replica_pace(self) -> float:
        """This replica's part of the pace for batch items: its callers' equal parts of the fleet's."""
        share = self._fallback.rate
        return share if share is not None else self._membership.rate * self._membership.part

    def caller_weight(self, caller: str) -> float:
        """A caller's weight here: its part is split evenly over the replicas its batch items wait on."""
        return 1 / self._membership.spread.get(_hashed(caller), 1)

    def share(self, fraction: float, name: str) -> FleetGovernor:
        qps = max(1, int(self.qps * fraction))
        schedule = self._membership.schedule.slice(name, qps)
        return FleetGovernor(
            schedule,
            name=f"{self.name}/{name}",
            clock=self._membership.clock,
            expected_replicas=self._expected_replicas,
            idle_after=IDLE_SLICE,
            replicas_known_to=self._replicas_heard_of,
        )

    def _replicas_heard_of(self) -> int | None:
        """The replicas alive at this budget's (or the budget it slices') last contact; None: never."""
        if self._membership.warm.is_set():
            return self._membership.replicas
        return self._replicas_known_to() if self._replicas_known_to is not None else None

    def waiting(self, priority: Priority) -> int:
        return sum(not future.done() for future, _, _ in self._waiting[priority])

    # --- the callers' side ------------------------------------------------------------------------

    async def acquire(self, priority: Priority, deadline: Deadline, *, retry: bool = False) -> None:
        if deadline.remaining() <= 0:
            raise self._throttled(self.spacing, priority)
        self._start()
        started = self._last_acquire = self._membership.now()
        while True:
            # In fallback the share alone grants; settling back, a slot needs the share and the fleet's
            # schedule both, whenever the share's slot came (a caller queued on the share during the
            # outage may get it after the share was dropped).
            local = self._fallback.share(self._membership.now())
            if local is not None:
                try:
                    await local.acquire(priority, deadline, retry=retry)
                except ShareDropped:
                    continue  # Redis answered before the share granted: the schedule's slot instead
                if self.fallback:
                    break
            try:
                await self._fleet_slot(priority, deadline, retry=retry)
                break
            except _Refused:
                continue  # Redis was lost meanwhile: the slot comes from the fallback share instead
        self.grants += 1
        if self._metrics is not None:
            self._metrics.governor_wait.record(
                self._membership.now() - started, {"moderation.priority": priority.value}
            )

    async def _fleet_slot(self, priority: Priority, deadline: Deadline, *, retry: bool) -> None:
        expected = sum(self.waiting(p) for p in ahead_of(priority)) * self.spacing
        # As in the in-process store: a retry goes first only when queuing would miss its deadline.
        first_in_line = retry and expected >= deadline.remaining()
        if first_in_line:
            expected = sum(self.waiting(p) for p in ahead_of(priority, first_in_line=True)) * self.spacing
        if expected >= deadline.remaining():
            raise self._throttled(expected, priority)
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (slot, deadline, _hashed(CALLER.get()))
        queue = self._waiting[priority]
        if first_in_line:
            queue.appendleft(waiter)
        else:
            queue.append(waiter)
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = _supervised(self._dispatch(), f"fleet budget {self.name}: dispatching")
        self._wake.set()
        try:
            async with asyncio.timeout(deadline.remaining()):
                await slot
        except TimeoutError:
            raise self._throttled(self.spacing * max(1, self.waiting(priority)), priority) from None
        finally:
            slot.cancel()

    def upstream_rate_limited(self, sent_at: float) -> None:
        if self._fallback.rate_limited(sent_at):
            return
        # In the membership's clock (a seam the skewed-clock tests replace), as long ago as `sent_at`.
        ago = asyncio.get_running_loop().time() - sent_at
        report = _supervised(
            self._heartbeat(refused_sent_at=self._membership.now() - ago),
            f"fleet budget {self.name}: reporting a rate limit",
        )
        self._reports.add(report)
        report.add_done_callback(self._reports.discard)

    async def aclose(self) -> None:
        self._closed = True
        tasks = [t for t in (self._dispatcher, self._reserving, self._heartbeats, *self._reports) if t]
        for task in tasks:
            task.cancel()
        # Gathered, not awaited one by one under a suppressed CancelledError: that would swallow a
        # cancellation of the caller's own, too.
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._fallback.aclose()
        if self._on_close is not None:
            await self._on_close()

    # --- membership: heartbeats, and the fallback when Redis is lost -----------------------------

    def start(self) -> None:
        """Heartbeats from the gateway's start: a replica that had Redis then has been in contact (its
        fallback is its share of the replicas it heard of) even if Redis goes before its first call."""
        self._start()

    def _start(self) -> None:
        if self._heartbeats is None or self._heartbeats.done():
            self._heartbeats = asyncio.create_task(self._heartbeat_while_used())

    async def _heartbeat_while_used(self) -> None:
        # A steady beat, however long each takes, so a live replica never looks silent to the others.
        loop = asyncio.get_running_loop()
        while not self._closed and (
            self._idle_after is None or self._membership.now() - self._last_acquire < self._idle_after
        ):
            started = loop.time()
            try:
                await self._heartbeat()
            except Exception:
                end_if_cancelled()
                # A bug must not stop the beat: without it this replica would look dead to the others.
                log.exception("fleet budget %s: heartbeat failed", self.name)
            await asyncio.sleep(max(0.0, started + HEARTBEAT_INTERVAL - loop.time()))

    async def _heartbeat(self, *, refused_sent_at: float | None = None) -> None:
        membership = self._membership
        try:
            if self.fallback:
                # Only Redis's clock: a heartbeat would end the silence that holds the share back from
                # the others' pace while this replica spends it. Once Redis answers, the heartbeat below
                # rejoins with the time the share's next slot is due, both in one script.
                await membership.probe()
            await membership.heartbeat(
                refused_sent_at=refused_sent_at, not_before=self._fallback.sent_until(membership.now())
            )
        except Unreachable as lost:
            await self._lost(str(lost))
            return
        if self.fallback:
            self._fallback.rejoin(membership.now())

    async def _lost(self, why: str) -> None:
        membership = self._membership
        if self._fallback.enter(
            rate=membership.rate,
            replicas=self._replicas_heard_of(),
            margin=membership.margin,
            why=why,
        ):
            self._slots.clear()
            for queue in self._waiting.values():
                for future, _, _ in queue:
                    if not future.done():
                        future.set_exception(_Refused())
                queue.clear()
        await membership.disconnect()

    def _clock_stepped(self, step: float) -> None:
        """Slots held were placed by the old clock: drop them and ask again (Redis clamps its side)."""
        log.warning(
            "fleet budget %s: Redis's clock stepped by %+.1f s; this replica's reserved slots dropped",
            self.name,
            step,
        )
        self._slots.clear()
        self._ask_again_at = 0.0
        self._wake.set()

    # --- the slots: reserved in Redis, granted here at their times -------------------------------

    async def _dispatch(self) -> None:
        while self._has_waiters():
            now = self._membership.now()
            margin_time = self._membership.margin * self._membership.schedule.parameters.window
            stale_after = max(STALE_SLOT_LEAST, STALE_SHARE_OF_MARGIN * margin_time)
            while self._slots and self._slots[0][0] <= now + CLOCK_TICK:
                due, spaced_under = self._slots.pop(0)
                if now - due <= stale_after:
                    self._grant(now, spaced_under)
            wanted = self._wanted()
            if wanted and now >= self._ask_again_at and (self._reserving is None or self._reserving.done()):
                self._reserving = _supervised(self._reserve(*wanted), f"fleet budget {self.name}: reserving")
            wake_at = min(
                [*(due for due, _ in self._slots[:1]), *([self._ask_again_at] if wanted else [])],
                default=None,
            )
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if wake_at is None else max(0.0, wake_at - now)):
                    await self._wake.wait()

    def _wanted(self) -> tuple[int, Priority, float] | None:
        """How many slots to ask for, for which priority, and the longest a caller could wait for one."""
        uncovered = self.waiting(Priority.INTERACTIVE) - len(self._slots)
        priority = Priority.INTERACTIVE
        for lower in (Priority.BATCH, Priority.BACKGROUND):
            if uncovered <= 0:
                uncovered += self.waiting(lower)
                priority = lower
        if uncovered <= 0:
            return None
        longest = max((d.remaining() for f, d, _ in self._waiting[priority] if not f.done()), default=0.0)
        return min(uncovered, MAX_RESERVE), priority, longest

    async def _reserve(self, count: int, priority: Priority, max_wait: float) -> None:
        membership = self._membership
        batch_callers = sorted({c for f, _, c in self._waiting[Priority.BATCH] if not f.done()})
        try:
            reservation, offset = await membership.reserve(
                count,
                interactive=priority is Priority.INTERACTIVE,
                max_wait=max_wait,
                not_before=self._fallback.sent_until(membership.now()),
                callers=batch_callers if priority is Priority.BATCH else (),
                background=priority is Priority.BACKGROUND,
            )
        except Unreachable as lost:
            await self._lost(str(lost))
            return
        if self.fallback:
            return  # the heartbeat gave up on Redis meanwhile: these slots go unused
        if reservation.count == 0:
            self._ask_again_at = reservation.first - offset
        for index in range(reservation.count):
            due = reservation.first + index * reservation.spacing - offset
            bisect.insort(self._slots, (due, reservation.spaced_under))
        self._wake.set()

    def _has_waiters(self) -> bool:
        for queue in self._waiting.values():
            while queue and queue[0][0].done():
                queue.popleft()
        return any(self._waiting.values())

    def _grant(self, now: float, spaced_under: float) -> None:
        while self._granted and self._granted[0][0] <= now - self.period:
            self._granted.popleft()
        if not self._has_waiters():
            return
        interactive, batch = self._waiting[Priority.INTERACTIVE], self._waiting[Priority.BATCH]
        # A task (BACKGROUND) gets a slot only when no call or stream item waits for it.
        priority = next(p for p in Priority if self._waiting[p])
        if interactive and batch:
            interactive_grants = sum(p is Priority.INTERACTIVE for _, p in self._granted)
            if not interactive_first(interactive_grants, len(self._granted), self.interactive_share):
                priority = Priority.BATCH
        future, _, _ = self._waiting[priority].popleft()
        future.set_result(None)
        self._granted.append((now, priority))
        # What a RequestLimitExceeded to this request is reported as sent under: the margin its slot was
        # spaced under, not the one in force by now (a shrink in the same reservation would understate it).
        self._membership.margins.record(now, spaced_under)
        if self._metrics is not None:
            self._metrics.governor_grants.add(1, {"moderation.priority": priority.value})

    def _throttled(self, retry_after: float, priority: Priority) -> BackendError:
        self.rejections += 1
        if self._metrics is not None:
            self._metrics.governor_rejections.add(1, {"moderation.priority": priority.value})
        return throttled(self.qps, retry_after)


def _hashed(caller: str) -> str:
    return hashlib.sha256(caller.encode()).hexdigest()[:16]


def _supervised(work: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
    """A background task whose failure is logged when it happens, not lost with the task."""
    task = asyncio.create_task(work)

    def report(done: asyncio.Task[None]) -> None:
        if not done.cancelled() and (error := done.exception()) is not None:
            log.error("%s failed", what, exc_info=error)

    task.add_done_callback(report)
    return task


def fleet_governor(
    client: redis.Redis,
    budget_key: str,
    qps: int,
    *,
    name: str,
    interactive_share: float,
    metrics: Metrics | None = None,
    expected_replicas: int | None = None,
) -> FleetGovernor:
    schedule = Schedule(client, budget_key, fleet_parameters(qps, interactive_share))
    return FleetGovernor(
        schedule, name=name, metrics=metrics, on_close=client.aclose, expected_replicas=expected_replicas
    )
