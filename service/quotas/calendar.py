"""Calendar periods in the billing time zone (the cloud provider bills by Beijing time); the clock seam."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from service.quotas.config import Period

__all__ = ["Clock", "PeriodWindow", "period_window", "wall_clock"]

# Seconds since the epoch. Injected by tests (a day's rollover); production reads the wall clock.
Clock = Callable[[], float]


def wall_clock() -> float:
    return time.time()


@dataclass(frozen=True)
class PeriodWindow:
    start: datetime
    end: datetime

    def seconds_left(self, now: float) -> float:
        return max(0.0, self.end.timestamp() - now)


def period_window(period: Period, now: float, zone: ZoneInfo) -> PeriodWindow:
    """The calendar day or month holding `now`, in `zone`: local midnight to local midnight (a DST day
    is 23 or 25 hours long)."""
    local = datetime.fromtimestamp(now, zone)
    if period == "day":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        following = start.date() + timedelta(days=1)
    else:
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        following = (start.date() + timedelta(days=32)).replace(day=1)
    end = datetime(following.year, following.month, following.day, tzinfo=zone)
    # `replace` keeps the offset of `now`; rebuilding gives each boundary its own (DST).
    start = datetime(start.year, start.month, start.day, tzinfo=zone)
    return PeriodWindow(start, end)
