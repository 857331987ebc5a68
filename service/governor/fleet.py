"""The fleet governor: every replica takes its slots from one schedule in Redis (`schedule.py`).

- **One even pace for the fleet.** A replica reserves slots for the callers it has waiting (batch items
  no further than `HORIZON` ahead) and grants each at its time, to an interactive caller first while
  they are within their share. The pace is Redis's, so replicas' clocks never matter.
- **Redis down or slow.** No Redis call waits longer than `REDIS_TIMEOUT` (or a few of its round
  trips, for a far Redis); then the replica falls back to its share of the budget (the budget over the
  replicas alive at last contact) on an in-process governor, and keeps probing Redis's clock without a
  heartbeat. Redis may still answer the others: once a replica has been silent for `SILENT_AFTER`,
  their pace leaves its share to it until they count it dead, so the share starts only then, after
  the slots reserved before. Once Redis answers again it rejoins the schedule, keeping its share as a
  second cap for `SETTLE` seconds, while the other replicas' probes bring them back too. One log line
  and a metric per transition.
- **Backoff.** RequestLimitExceeded lowers the fleet's pace gently (`DECREASE_FACTOR`, at most once a
  period fleet-wide), and the pace climbs back linearly.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as redis
from redis.exceptions import RedisError

from backends.errors import BackendError
from service.deadlines import Deadline
from service.governor.base import Priority, throttled
from service.governor.local import SAFETY_MARGIN as LOCAL_MARGIN
from service.governor.local import RateGovernor
from service.governor.schedule import Schedule, ScheduleParameters
from service.telemetry import Metrics

__all__ = ["FLEET_MARGIN", "FleetGovernor", "fleet_governor", "fleet_parameters"]

log = logging.getLogger(__name__)

# IMS sees our sends up to 20 ms apart from when we made them (0-20 ms of varying network delay), so a
# second of its arrivals may hold a second and 20 ms of our sends: the pace's period is that plus 3 ms
# for late event-loop wake-ups (STALE_SLOT) and 7 ms for the rest of the way from a grant to the wire
# and the replicas' estimates of Redis's clock (see the README: 25 ms in all was measured too little).
FLEET_MARGIN = 0.03
# A lone RequestLimitExceeded costs 3 % of the pace for a few seconds, not a tenth of the budget.
DECREASE_FACTOR = 0.97
INCREASE_STEP = 0.01
HEARTBEAT_INTERVAL = 0.5
# Three missed heartbeats and a replica no longer counts toward the fallback share.
HEARTBEAT_TIMEOUT = 1.5
# A replica that missed a heartbeat may have lost Redis and be spending its share: the others' pace
# leaves that share to it until HEARTBEAT_TIMEOUT counts it dead, and a replica that lost Redis waits
# this long, and out the slots reserved meanwhile, before it spends the share.
SILENT_AFTER = 2 * HEARTBEAT_INTERVAL
HORIZON = 0.25
# The longest a Redis call may take, or four of its best round trips lately if that is longer (a far
# Redis); the first contact connects and loads the scripts, a few round trips more.
REDIS_TIMEOUT = 0.4
ROUND_TRIPS = 4
FIRST_CONTACT_TIMEOUT = 1.0
SETTLE = 1.0
# The most slots asked for in one round trip.
MAX_RESERVE = 32
# A slot granted late crowds the next one as network jitter does: later than this it is dropped, so
# lateness stays within the margin's allowance for it.
STALE_SLOT = 0.003
_UNREACHABLE = (RedisError, OSError, TimeoutError)
T = TypeVar("T")


def fleet_parameters(qps: int, interactive_share: float) -> ScheduleParameters:
    return ScheduleParameters(
        qps=qps,
        period=1.0 + FLEET_MARGIN,
        increase_step=INCREASE_STEP,
        decrease_factor=DECREASE_FACTOR,
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
        silent_after=SILENT_AFTER,
        horizon=HORIZON,
        interactive_share=interactive_share,
    )


class ClockOffset:
    """Redis's clock minus this replica's, from the round trip that measured it best lately.

    Each answer says when Redis read its clock, somewhere within the round trip: the shortest recent
    round trip bounds that best, and one estimate for all reservations keeps slots evenly spaced
    however much each single round trip varies.
    """

    def __init__(self, memory: float = 10.0) -> None:
        self._memory = memory
        # (local time, round trip, offset), the round trips increasing.
        self._samples: deque[tuple[float, float, float]] = deque()

    @property
    def best_round_trip(self) -> float | None:
        return self._samples[0][1] if self._samples else None

    @property
    def offset(self) -> float:
        return self._samples[0][2] if self._samples else 0.0

    def update(self, redis_now: float, sent: float, received: float) -> float:
        round_trip = received - sent
        while self._samples and self._samples[-1][1] >= round_trip:
            self._samples.pop()
        while self._samples and self._samples[0][0] < received - self._memory:
            self._samples.popleft()
        self._samples.append((received, round_trip, redis_now - (sent + received) / 2))
        return self._samples[0][2]


class _Unreachable(Exception):
    """Redis did not answer in time: the waiter takes its slot from the fallback share instead."""


class FleetGovernor:
    def __init__(
        self,
        schedule: Schedule,
        *,
        name: str,
        metrics: Metrics | None = None,
        clock: Callable[[], float] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        parameters = schedule.parameters
        self.qps = parameters.qps
        self.interactive_share = parameters.interactive_share
        self.period = parameters.period
        self.name = name
        self.replicas = 1
        # The replicas with batch items waiting, this one included once it has some.
        self.busy = 1
        self.fallback = False
        self.grants = 0
        self.rejections = 0
        self._schedule = schedule
        self._metrics = metrics
        # The replica's own clock, only ever used for offsets: a seam for the skewed-clock test.
        self._clock = clock
        self._replica = uuid.uuid4().hex
        self._rate = float(self.qps)
        self._local: RateGovernor | None = None
        self._settle_until = 0.0
        self._waiting: dict[Priority, deque[tuple[asyncio.Future[None], Deadline]]] = {
            p: deque() for p in Priority
        }
        self._slots: list[float] = []
        # (time, priority) of this replica's grants in the last period: the local fairness ledger.
        self._granted: deque[tuple[float, Priority]] = deque()
        self._ask_again_at = 0.0
        self._offsets = ClockOffset()
        # Set by the first heartbeat: connected, scripts loaded, so reservations time clean round trips.
        self._warm = asyncio.Event()
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._reserving: asyncio.Task[None] | None = None
        self._heartbeats: asyncio.Task[None] | None = None
        self._reports: set[asyncio.Task[None]] = set()
        self._on_close = on_close
        if metrics is not None:
            metrics.watch_fleet(self)

    @property
    def rate(self) -> float:
        """The fleet-wide pace as Redis last said (or the fallback share's, while Redis is away)."""
        return self._local.rate if self.fallback and self._local is not None else self._rate

    @property
    def spacing(self) -> float:
        return self.period / self._rate

    @property
    def replica_pace(self) -> float:
        """This replica's part of the pace for batch items: the fleet's over the replicas using it."""
        if self.fallback and self._local is not None:
            return self._local.rate
        return self._rate / max(1, self.busy)

    def share(self, fraction: float, name: str) -> FleetGovernor:
        qps = max(1, int(self.qps * fraction))
        return FleetGovernor(self._schedule.slice(name, qps), name=f"{self.name}/{name}", clock=self._clock)

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def waiting(self, priority: Priority) -> int:
        return sum(not future.done() for future, _ in self._waiting[priority])

    async def acquire(self, priority: Priority, deadline: Deadline) -> None:
        if deadline.remaining() <= 0:
            raise self._throttled(self.spacing, priority)
        self._start()
        started = self._now()
        while True:
            # In fallback the share alone grants; settling back, a slot needs the share and the fleet's
            # schedule both, whenever the share's slot came (a caller queued on the share during the
            # outage may get it after the share was dropped).
            local = self._current_share()
            if local is not None:
                await local.acquire(priority, deadline)
                if self.fallback:
                    break
            try:
                await self._fleet_slot(priority, deadline)
                break
            except _Unreachable:
                continue  # Redis was lost meanwhile: the slot comes from the fallback share instead
        self.grants += 1
        if self._metrics is not None:
            self._metrics.governor_wait.record(self._now() - started, {"moderation.priority": priority.value})

    def _current_share(self) -> RateGovernor | None:
        """The in-process share that caps this replica now: in fallback, and while settling back."""
        if self._local is not None and not self.fallback and self._now() >= self._settle_until:
            self._local = None
        return self._local

    async def _fleet_slot(self, priority: Priority, deadline: Deadline) -> None:
        ahead = self.waiting(Priority.INTERACTIVE) + (
            self.waiting(Priority.BATCH) if priority is Priority.BATCH else 0
        )
        expected = ahead * self.spacing
        if expected >= deadline.remaining():
            raise self._throttled(expected, priority)
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[priority].append((slot, deadline))
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch())
        self._wake.set()
        try:
            async with asyncio.timeout(deadline.remaining()):
                await slot
        except TimeoutError:
            raise self._throttled(self.spacing * max(1, self.waiting(priority)), priority) from None
        finally:
            slot.cancel()

    def upstream_rate_limited(self) -> None:
        if self.fallback and self._local is not None:
            self._local.upstream_rate_limited()
            return
        report = asyncio.create_task(self._heartbeat(rate_limited=True))
        self._reports.add(report)
        report.add_done_callback(self._reports.discard)

    async def aclose(self) -> None:
        tasks = [t for t in (self._dispatcher, self._reserving, self._heartbeats, *self._reports) if t]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._local is not None:
            await self._local.aclose()
        if self._on_close is not None:
            await self._on_close()

    # --- the replica's side of the schedule ------------------------------------------------------

    def _start(self) -> None:
        if self._heartbeats is None:
            self._heartbeats = asyncio.create_task(self._heartbeat_forever())

    async def _heartbeat_forever(self) -> None:
        # A steady beat, however long each takes, so a live replica never looks silent to the others.
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self._heartbeat()
            await asyncio.sleep(max(0.0, started + HEARTBEAT_INTERVAL - loop.time()))

    async def _heartbeat(self, *, rate_limited: bool = False) -> None:
        if self.fallback:
            # Only Redis's clock: a heartbeat would end the silence that holds the share back from the
            # others' pace while this replica spends it. Once Redis answers, the heartbeat below rejoins
            # with the time the share's next slot is due, both in one script.
            try:
                await self._redis(self._schedule.clock())
            except _UNREACHABLE:
                await self._lost()
                return
        started = self._now()
        try:
            replicas, rate, redis_now = await self._redis(
                self._schedule.heartbeat(
                    self._replica, rate_limited=rate_limited, not_before=self._share_sent_until()
                )
            )
        except _UNREACHABLE:
            await self._lost()
            return
        self._offsets.update(redis_now, started, self._now())
        self._contact(replicas, rate)
        self._warm.set()
        if self.fallback:
            self._rejoin()

    async def _redis(self, call: Awaitable[T]) -> T:
        """One Redis call, never waiting longer than REDIS_TIMEOUT; its round trip is a metric."""
        started = self._now()
        best = self._offsets.best_round_trip
        timeout = FIRST_CONTACT_TIMEOUT if best is None else max(REDIS_TIMEOUT, ROUND_TRIPS * best)
        async with asyncio.timeout(timeout):
            result = await call
        if self._metrics is not None:
            self._metrics.fleet_redis_duration.record(
                self._now() - started, {"moderation.backend": self.name}
            )
        return result

    def _contact(self, replicas: int, rate: float) -> None:
        self.replicas = max(1, replicas)
        self._rate = max(1.0, rate)

    async def _lost(self) -> None:
        self._enter_fallback()
        with contextlib.suppress(*_UNREACHABLE):
            await self._schedule.disconnect()

    def _enter_fallback(self) -> None:
        if self.fallback:
            return
        self.fallback = True
        share = max(1, int(self._rate) // self.replicas)
        if self._local is None:
            self._local = RateGovernor(
                share, interactive_share=self.interactive_share, window=self.period / (1 + LOCAL_MARGIN)
            )
        # else: still settling back from the last outage; that share, with its recent grants, goes on.
        # Redis may still answer the others: the share starts once it counts this replica silent (and
        # paces them without it), after the slots they reserved before that, none more than HORIZON
        # ahead, and one of its own spacings after: then the share and the others' pace fit together
        # into any sliding second, as the shares of a fleet that all lost Redis do.
        self._local.start_after(SILENT_AFTER + HORIZON + self._local.spacing)
        share = self._local.qps
        self._slots.clear()
        for queue in self._waiting.values():
            for future, _ in queue:
                if not future.done():
                    future.set_exception(_Unreachable())
            queue.clear()
        log.warning(
            "fleet budget %s: Redis unreachable; spending this replica's share, %d/s of %d/s (%d replicas)",
            self.name,
            share,
            self.qps,
            self.replicas,
        )
        self._transition("fallback")

    def _share_sent_until(self) -> float:
        """While a fallback share caps this replica, when its next slot is due, in Redis's time: the
        fleet's schedule, fresh after an empty restart or stale, must not start before it (0: no share)."""
        if self._local is None:
            return 0.0
        return self._now() + self._local.next_grant_in() + self._offsets.offset

    def _rejoin(self) -> None:
        self.fallback = False
        self._settle_until = self._now() + SETTLE
        log.warning("fleet budget %s: Redis answers again; back on the fleet's schedule", self.name)
        self._transition("shared")

    def _transition(self, mode: str) -> None:
        if self._metrics is not None:
            self._metrics.fleet_transitions.add(1, {"moderation.backend": self.name, "moderation.mode": mode})

    async def _dispatch(self) -> None:
        while self._has_waiters():
            now = self._now()
            while self._slots and self._slots[0] <= now:
                if now - self._slots.pop(0) <= STALE_SLOT:
                    self._grant(now)
            wanted = self._wanted()
            if wanted and now >= self._ask_again_at and (self._reserving is None or self._reserving.done()):
                self._reserving = asyncio.create_task(self._reserve(*wanted))
            wake_at = min([*self._slots[:1], *([self._ask_again_at] if wanted else [])], default=None)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if wake_at is None else max(0.0, wake_at - now)):
                    await self._wake.wait()

    def _wanted(self) -> tuple[int, Priority, float] | None:
        """How many slots to ask for, for which priority, and the longest a caller could wait for one."""
        uncovered = self.waiting(Priority.INTERACTIVE) - len(self._slots)
        priority = Priority.INTERACTIVE
        if uncovered <= 0:
            uncovered += self.waiting(Priority.BATCH)
            priority = Priority.BATCH
        if uncovered <= 0:
            return None
        longest = max((d.remaining() for f, d in self._waiting[priority] if not f.done()), default=0.0)
        return min(uncovered, MAX_RESERVE), priority, longest

    async def _reserve(self, count: int, priority: Priority, max_wait: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_CONTACT_TIMEOUT):
                await self._warm.wait()
        started = self._now()
        try:
            reservation = await self._redis(
                self._schedule.reserve(
                    self._replica,
                    count,
                    interactive=priority is Priority.INTERACTIVE,
                    max_wait=max_wait,
                    not_before=self._share_sent_until(),
                )
            )
        except _UNREACHABLE:
            await self._lost()
            return
        if self.fallback:
            return  # the heartbeat gave up on Redis meanwhile: these slots go unused
        received = self._now()
        self._contact(reservation.replicas, reservation.rate)
        self.busy = reservation.busy
        offset = self._offsets.update(reservation.now, started, received)
        if reservation.count == 0:
            self._ask_again_at = reservation.first - offset
        for index in range(reservation.count):
            bisect.insort(self._slots, reservation.first + index * reservation.spacing - offset)
        self._wake.set()

    def _has_waiters(self) -> bool:
        for queue in self._waiting.values():
            while queue and queue[0][0].done():
                queue.popleft()
        return any(self._waiting.values())

    def _grant(self, now: float) -> None:
        while self._granted and self._granted[0][0] <= now - self.period:
            self._granted.popleft()
        if not self._has_waiters():
            return
        interactive, batch = self._waiting[Priority.INTERACTIVE], self._waiting[Priority.BATCH]
        priority = Priority.INTERACTIVE if interactive else Priority.BATCH
        if interactive and batch:
            interactive_grants = sum(p is Priority.INTERACTIVE for _, p in self._granted)
            if interactive_grants >= self.interactive_share * max(1, len(self._granted)):
                priority = Priority.BATCH
        future, _ = self._waiting[priority].popleft()
        future.set_result(None)
        self._granted.append((now, priority))
        if self._metrics is not None:
            self._metrics.governor_grants.add(1, {"moderation.priority": priority.value})

    def _throttled(self, retry_after: float, priority: Priority) -> BackendError:
        self.rejections += 1
        if self._metrics is not None:
            self._metrics.governor_rejections.add(1, {"moderation.priority": priority.value})
        return throttled(self.qps, retry_after)


def fleet_governor(
    client: redis.Redis,
    budget_key: str,
    qps: int,
    *,
    name: str,
    interactive_share: float,
    metrics: Metrics | None = None,
) -> FleetGovernor:
    schedule = Schedule(client, budget_key, fleet_parameters(qps, interactive_share))
    return FleetGovernor(schedule, name=name, metrics=metrics, on_close=client.aclose)
