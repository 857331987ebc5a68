"""The gateway's resident memory, sampled each second against the soak's progress."""

from __future__ import annotations

import asyncio
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from testbed.processes import Running

INTERVAL = 1.0


@dataclass
class RssSamples:
    # (share of stream items answered, VmRSS in bytes), one per second.
    samples: list[tuple[float, int]] = field(default_factory=list)
    # VmHWM at the end: the most the gateway ever held resident.
    peak: int = 0

    def at(self, share: float) -> int:
        """The first sample taken once `share` of the items was answered (0 when never reached)."""
        return next((rss for progress, rss in self.samples if progress >= share), 0)

    @property
    def end(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def growth(self, warm_share: float) -> float:
        """End against warmed up, as a fraction: 0.05 is 5 % growth."""
        warm = self.at(warm_share)
        return self.end / warm - 1 if warm else math.nan

    def fitted_growth(self, warm_share: float) -> float:
        """The same growth read off a least-squares line through every sample after warm-up: one
        unlucky sample (a garbage collection, an arena trimmed) cannot make or hide a leak."""
        after = [(p, float(rss)) for p, rss in self.samples if p >= warm_share]
        warm = self.at(warm_share)
        if len({p for p, _ in after}) < 2 or not warm:
            return math.nan
        slope, _ = statistics.linear_regression([p for p, _ in after], [rss for _, rss in after])
        return slope * (after[-1][0] - after[0][0]) / warm


async def sample_rss(
    gateway: Running, progress: Callable[[], float], samples: RssSamples, stop: asyncio.Event
) -> None:
    """Samples until `stop` is set, and once more then: the last sample is the end of the run."""
    while True:
        samples.samples.append((progress(), gateway.status_bytes("VmRSS")))
        if stop.is_set():
            samples.peak = gateway.status_bytes("VmHWM")
            return
        try:
            await asyncio.wait_for(stop.wait(), timeout=INTERVAL)
        except TimeoutError:
            continue
