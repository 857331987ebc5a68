"""A replica's membership of a fleet budget: its calls to the schedule in Redis, each bounded in time,
its heartbeats, its estimate of Redis's clock, and the fleet as Redis last described it.

Any failure of a Redis call, an exception of any kind or a reply that does not parse, is `Unreachable`:
the governor then falls back (`fallback.py`) rather than wait out its callers' deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from common.cancellation import end_if_cancelled
from service.governor.pacing import START, MarginHistory
from service.governor.schedule import Reservation, Schedule
from service.telemetry import Metrics

__all__ = ["ClockOffset", "Membership", "Unreachable"]

# The longest a Redis call may take, or four of its best round trips lately if that is longer (a far
# Redis); the first contact connects and loads the scripts, a few round trips more.
REDIS_TIMEOUT = 0.4
ROUND_TRIPS = 4
FIRST_CONTACT_TIMEOUT = 1.0
# Offsets from one round trip to the next agree within the round trip; a jump larger than this (plus
# the round trip) is Redis's clock stepping.
CLOCK_STEP = 0.2
T = TypeVar("T")


class Unreachable(Exception):
    """Redis did not answer in time, or not with a reply that parses."""


class ClockOffset:
    """Redis's clock minus this replica's, from the round trip that measured it best lately.

    Each answer says when Redis read its clock, somewhere within the round trip: the shortest recent
    round trip bounds that best, and one estimate for all reservations keeps slots evenly spaced
    however much each single round trip varies.
    """

    def __init__(self, memory: float = 10.0) -> None:
        self._memory = memory
        # The step the last update found, in seconds (0: none).
        self.stepped = 0.0
        # (local time, round trip, offset), the round trips increasing.
        self._samples: deque[tuple[float, float, float]] = deque()

    @property
    def best_round_trip(self) -> float | None:
        return self._samples[0][1] if self._samples else None

    @property
    def offset(self) -> float:
        return self._samples[0][2] if self._samples else 0.0

    def update(self, redis_now: float, sent: float, received: float) -> float:
        """The offset, after this sample; a step of Redis's clock (`stepped`) starts afresh from it."""
        round_trip = received - sent
        offset = redis_now - (sent + received) / 2
        self.stepped = 0.0
        if self._samples and abs(offset - self.offset) > CLOCK_STEP + round_trip:
            # Redis's clock moved against ours (an NTP step, a VM resume, a failover to a replica with
            # another clock): the samples before measured a clock that is gone.
            self.stepped = offset - self.offset
            self._samples.clear()
        while self._samples and self._samples[-1][1] >= round_trip:
            self._samples.pop()
        while self._samples and self._samples[0][0] < received - self._memory:
            self._samples.popleft()
        self._samples.append((received, round_trip, offset))
        return self._samples[0][2]


class Membership:
    """One replica's contact with one budget's schedule."""

    def __init__(
        self,
        schedule: Schedule,
        *,
        name: str,
        metrics: Metrics | None,
        clock: Callable[[], float] | None,
    ) -> None:
        self.schedule = schedule
        self.name = name
        self.replica = uuid.uuid4().hex
        self.replicas = 1
        # This replica's part of the pace for batch items, and over how many replicas each of its
        # callers' batch items wait (by hashed caller), as Redis last said.
        self.part = 1.0
        self.spread: dict[str, int] = {}
        self.rate = float(schedule.parameters.qps)
        self.margin = START
        # The margin each request granted here was sent under (its slot's spacing), by this replica's
        # time of the grant: what a RequestLimitExceeded to it reports.
        self.margins = MarginHistory(START)
        self.offsets = ClockOffset()
        # Set by the first heartbeat: connected, scripts loaded, so reservations time clean round trips.
        self.warm = asyncio.Event()
        self._metrics = metrics
        # The replica's own clock, only ever used for offsets: a seam for the skewed-clock test.
        self.clock = clock
        # Told the size of a step of Redis's clock, once the offset has moved to the new clock.
        self.on_clock_step: Callable[[float], None] | None = None

    def now(self) -> float:
        return self.clock() if self.clock is not None else asyncio.get_running_loop().time()

    @property
    def period(self) -> float:
        return self.schedule.parameters.window * (1 + self.margin)

    async def probe(self) -> None:
        """Redis's clock only: proof that it answers, leaving no trace in the schedule."""
        await self._call(self.schedule.clock())

    async def heartbeat(self, *, refused_sent_at: float | None, not_before: float) -> None:
        """This replica alive (and the backend's RequestLimitExceeded to a request sent at
        `refused_sent_at`, if it said so); both times are this replica's."""
        started = self.now()
        sent_under = None if refused_sent_at is None else self.margins.at(refused_sent_at)
        beat = await self._call(
            self.schedule.heartbeat(
                self.replica, sent_under=sent_under, not_before=self._redis_time(not_before)
            )
        )
        self._measured(beat.now, started)
        self._heard(beat.replicas, beat.rate, beat.margin)
        self.warm.set()

    async def reserve(
        self,
        count: int,
        *,
        interactive: bool,
        max_wait: float,
        not_before: float,
        callers: Sequence[str],
        background: bool = False,
    ) -> tuple[Reservation, float]:
        """Slots for `count` waiters, and the offset that turns their Redis times into this replica's."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_CONTACT_TIMEOUT):
                await self.warm.wait()
        started = self.now()
        reservation = await self._call(
            self.schedule.reserve(
                self.replica,
                count,
                interactive=interactive,
                max_wait=max_wait,
                not_before=self._redis_time(not_before),
                callers=callers,
                background=background,
            )
        )
        offset = self._measured(reservation.now, started)
        self._heard(reservation.replicas, reservation.rate, reservation.margin)
        if not interactive and not background:
            self.part, self.spread = reservation.part, reservation.spread
        return reservation, offset

    async def disconnect(self) -> None:
        """Drop pooled connections: after an outage, a restarted Redis would fail each one once."""
        with contextlib.suppress(Exception):  # a connection that will not close is dropped all the same
            await self.schedule.disconnect()

    def _measured(self, redis_now: float, sent: float) -> float:
        offset = self.offsets.update(redis_now, sent, self.now())
        if self.offsets.stepped and self.on_clock_step is not None:
            self.on_clock_step(self.offsets.stepped)
        return offset

    def _redis_time(self, local: float) -> float:
        return local + self.offsets.offset if local else 0.0

    def _heard(self, replicas: int, rate: float, margin: float) -> None:
        self.replicas = max(1, replicas)
        self.rate = max(1.0, rate)
        self.margin = margin

    async def _call(self, call: Awaitable[T]) -> T:
        """One Redis call, never waiting longer than REDIS_TIMEOUT; its round trip is a metric. Raises
        `Unreachable` for anything but an answer that parsed."""
        started = self.now()
        best = self.offsets.best_round_trip
        timeout = FIRST_CONTACT_TIMEOUT if best is None else max(REDIS_TIMEOUT, ROUND_TRIPS * best)
        try:
            async with asyncio.timeout(timeout):
                result = await call
        except Exception as error:
            end_if_cancelled()
            raise Unreachable(type(error).__name__) from error
        if self._metrics is not None:
            self._metrics.fleet_redis_duration.record(self.now() - started, {"moderation.backend": self.name})
        return result
