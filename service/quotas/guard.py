"""The quota gate: a unit of each quota governing a call reserved before the backend is called, and
given back if the call turns out not to be billed.

A hard quota at its limit refuses (`QuotaExhausted`); a soft one serves, and the reservation that
reaches 80 % and the one that reaches 100 % each write a log line and count a metric (the store's
atomic counts make that one reservation fleet-wide). When the store (Redis) cannot answer, `fail-closed`
refuses every call a quota governs, `fail-open` serves them and counts them here until the store is
back, then adds those counts to it; each change writes one log line and counts a metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from opentelemetry import metrics

from service.quotas.calendar import Clock, PeriodWindow, period_window
from service.quotas.config import Quota, QuotaBook
from service.quotas.metrics import QuotaMetrics
from service.quotas.refusal import QuotaExhausted, quota_unavailable
from service.quotas.reload import QuotaReloader
from service.quotas.store import Counter, QuotaStore, Reservation, StoreUnavailable
from service.telemetry import BoundedLabel

__all__ = ["NOTHING_RESERVED", "FailureMode", "QuotaGate", "QuotaGuard", "Ticket", "Usage"]

log = logging.getLogger(__name__)

FailureMode = Literal["fail-closed", "fail-open"]
KEY_PREFIX = "moderation:quota:"
# A counter outlives its period by this much: replicas whose clocks differ by seconds still share it.
EXPIRY_MARGIN = 3_600
# While the store is away, it is asked again at most this often (the calls between do not wait for it).
PROBE_INTERVAL = 1.0
SOFT_THRESHOLDS = (80, 100)


class Ticket(Protocol):
    async def release(self) -> None:
        """Gives the reserved units back: the call was not billed."""


class QuotaGate(Protocol):
    """The seam the backend wrapper calls: one reservation per backend attempt."""

    async def reserve(self, caller: str, biz_type: str) -> Ticket:
        """Raises `QuotaExhausted` past a hard quota, or a QUOTA_UNAVAILABLE `BackendError`."""
        ...


@dataclass(frozen=True)
class Usage:
    quota: Quota
    window: PeriodWindow
    used: int


class _Nothing:
    async def release(self) -> None:
        return None


NOTHING_RESERVED = _Nothing()


@dataclass(frozen=True)
class _Reserved:
    guard: QuotaGuard
    keys: tuple[str, ...]
    local: bool

    async def release(self) -> None:
        await self.guard.give_back(self.keys, local=self.local)


class QuotaGuard:
    def __init__(
        self,
        book: QuotaBook,
        store: QuotaStore,
        *,
        zone: ZoneInfo,
        mode: FailureMode,
        meter: metrics.Meter,
        callers: BoundedLabel,
        clock: Clock,
        routes_file: Path | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.book = book
        self._reloader = QuotaReloader(routes_file, self._replace) if routes_file is not None else None
        self._reloading: asyncio.Task[None] | None = None
        self._closed = False
        self._store = store
        self._zone = zone
        self._mode = mode
        self._clock = clock
        self._monotonic = monotonic
        self._metrics = QuotaMetrics(meter, callers, lambda: self.book, clock)
        self._down = False
        self._next_probe = 0.0
        # fail-open: {key: (count, ttl)} served while the store was away, added to it once it is back.
        self._pending: dict[str, tuple[int, int]] = {}

    def _replace(self, book: QuotaBook) -> None:
        self.book = book

    def counter(self, quota: Quota, now: float) -> tuple[Counter, PeriodWindow]:
        window = period_window(quota.period, now, self._zone)
        identity = f"{quota.caller}\0{quota.name}\0{window.start.isoformat()}".encode()
        key = KEY_PREFIX + hashlib.sha256(identity).hexdigest()[:40]
        ttl = math.ceil(window.seconds_left(now)) + EXPIRY_MARGIN
        return Counter(key, quota.limit, quota.hard, ttl), window

    async def reserve(self, caller: str, biz_type: str) -> Ticket:
        quotas = self.book.governing(caller, biz_type)
        if not quotas:
            return NOTHING_RESERVED
        now = self._clock()
        pairs = [self.counter(q, now) for q in quotas]
        counters = [counter for counter, _ in pairs]
        if self._down and self._monotonic() < self._next_probe:
            return self._while_down(counters)
        try:
            await self._flush()
            reservation = await self._store.reserve(counters)
        except StoreUnavailable as problem:
            self._went_down(problem)
            return self._while_down(counters)
        self._came_back()
        return self._settled(quotas, [w for _, w in pairs], counters, reservation, now)

    def _settled(
        self,
        quotas: Sequence[Quota],
        windows: Sequence[PeriodWindow],
        counters: Sequence[Counter],
        reservation: Reservation,
        now: float,
    ) -> Ticket:
        if not reservation.granted:
            quota, window = quotas[reservation.refused], windows[reservation.refused]
            self._metrics.saw(quota, window.end.timestamp(), reservation.counts[0])
            self._metrics.refused(quota)
            raise QuotaExhausted(
                quota.name, quota.limit, quota.period, window.end.isoformat(), window.seconds_left(now)
            )
        for quota, window, used in zip(quotas, windows, reservation.counts, strict=True):
            self._metrics.saw(quota, window.end.timestamp(), used)
            if not quota.hard:
                self._soft_thresholds(quota, used)
        return _Reserved(self, tuple(c.key for c in counters), local=False)

    def _soft_thresholds(self, quota: Quota, used: int) -> None:
        for percent in SOFT_THRESHOLDS:
            # The one reservation that reaches the threshold (counts are atomic: one in the fleet).
            if used == max(1, math.ceil(quota.limit * percent / 100)):
                self._metrics.soft_reached(quota, percent)
                log.warning(
                    "caller %r reached %d %% of its soft quota %s (%d of %d billed calls); still served",
                    quota.caller,
                    percent,
                    quota.name,
                    used,
                    quota.limit,
                )

    def _while_down(self, counters: Sequence[Counter]) -> Ticket:
        if self._mode == "fail-closed":
            raise quota_unavailable()
        for counter in counters:
            count, _ = self._pending.get(counter.key, (0, counter.ttl))
            self._pending[counter.key] = (count + 1, counter.ttl)
        return _Reserved(self, tuple(c.key for c in counters), local=True)

    async def give_back(self, keys: Sequence[str], *, local: bool) -> None:
        if local:
            for key in keys:
                count, ttl = self._pending.get(key, (0, 0))
                if count > 0:
                    self._pending[key] = (count - 1, ttl)
            return
        try:
            await self._store.release(keys)
        except StoreUnavailable:
            # The unit stays counted: a quota errs towards refusing, never towards an unpaid call.
            return

    async def _flush(self) -> None:
        """The counts served while the store was away, added once it answers again."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        try:
            await self._store.add({key: pair for key, pair in pending.items() if pair[0] > 0})
        except StoreUnavailable:
            for key, (count, ttl) in pending.items():
                now_count, _ = self._pending.get(key, (0, ttl))
                self._pending[key] = (now_count + count, ttl)
            raise

    def _went_down(self, problem: StoreUnavailable) -> None:
        self._next_probe = self._monotonic() + PROBE_INTERVAL
        if self._down:
            return
        self._down = True
        self._metrics.store_transition("down", self._mode)
        what = "refusing calls a quota governs" if self._mode == "fail-closed" else "counting calls here"
        log.warning("quota store (Redis) unreachable (%s): %s (%s)", problem, what, self._mode)

    def _came_back(self) -> None:
        if not self._down:
            return
        self._down = False
        self._metrics.store_transition("up", self._mode)
        log.warning("quota store (Redis) reachable again: quotas are counted fleet-wide")

    async def usage(self, caller: str) -> list[Usage]:
        """The caller's quotas in their current periods; `StoreUnavailable` when the counts are away."""
        quotas = self.book.of(caller)
        if not quotas:
            return []
        now = self._clock()
        pairs = [self.counter(q, now) for q in quotas]
        try:
            await self._flush()
            counts = await self._store.read([c.key for c, _ in pairs])
        except StoreUnavailable as problem:
            self._went_down(problem)
            raise
        self._came_back()
        rows = []
        for quota, (_, window), used in zip(quotas, pairs, counts, strict=True):
            self._metrics.saw(quota, window.end.timestamp(), used)
            rows.append(Usage(quota, window, used))
        return rows

    async def start(self) -> None:
        """Follows the routing file; once, however many backends share this guard."""
        if self._reloader is not None and self._reloading is None:
            self._reloading = asyncio.create_task(self._reloader.run())

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._reloading is not None:
            self._reloading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reloading
        await self._store.aclose()
