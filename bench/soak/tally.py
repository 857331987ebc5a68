"""What became of the calls of one kind (stream items, unary calls): outcome, latency, lateness."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from bench.percentile import percentile
from bench.soak.plan import LATE_TOLERANCE

OK = "OK"


@dataclass
class Tally:
    # Outcomes by `OK` or `CODE/REASON` (the ErrorInfo reason).
    outcomes: Counter[str] = field(default_factory=Counter)
    # Seconds from sending to the answer, one per answer.
    latencies: list[float] = field(default_factory=list)
    # Outcomes of the answers later than their deadline plus LATE_TOLERANCE; the worst overshoot seen.
    late_outcomes: Counter[str] = field(default_factory=Counter)
    worst_overshoot: float = -math.inf

    def record(self, outcome: str, latency: float, limit: float) -> None:
        """One answer, `latency` seconds after sending, which the gateway promised within `limit`."""
        self.outcomes[outcome] += 1
        self.latencies.append(latency)
        overshoot = latency - limit
        self.worst_overshoot = max(self.worst_overshoot, overshoot)
        if overshoot > LATE_TOLERANCE:
            self.late_outcomes[outcome] += 1

    @property
    def late(self) -> int:
        return self.late_outcomes.total()

    @property
    def answered(self) -> int:
        return len(self.latencies)

    @property
    def errors(self) -> int:
        return self.answered - self.outcomes[OK]

    def percentile(self, share: float) -> float:
        return percentile(self.latencies, share)

    def describe(self) -> str:
        outcomes = ", ".join(f"{name} {count}" for name, count in self.outcomes.most_common())
        return f"{self.answered} answered ({outcomes})"
