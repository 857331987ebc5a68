"""The pacing rules every governor follows, whichever store keeps its slots (in-process: `local.py`;
Redis: `schedule.py`, whose scripts are generated from these numbers), so the embedded default and the
fleet cannot drift apart.

- **The margin, learned.** Grants are paced `window x (1 + margin) / rate` apart. IMS counts arrivals in
  any sliding second, and the network moves each of ours by up to a few tens of milliseconds, so a second
  of its arrivals can hold a little more than a second of our sends: the margin covers that. It starts
  at `START` (3 %, safe for 0-20 ms of jitter), widens by `WIDEN` on each RequestLimitExceeded (at most
  once a period) and shrinks by `SHRINK` for every `SHRINK_AFTER` seconds' worth of the budget granted
  without one, down to `LEAST`: a quiet path creeps towards the whole budget, a jittery one stays safe.
  Grants, not time, are the evidence: an idle budget learns nothing, and keeps its margin.
- **Backoff.** RequestLimitExceeded also lowers the pace by 3 % (`DECREASE_FACTOR`, once a period), and
  it climbs back linearly by `INCREASE_STEP` of the budget each period after one quiet period: a lone
  throttle costs a few percent for a few seconds.
- **Priorities.** While both wait, an interactive call (unary) goes first as long as interactive calls
  hold less than their share of the grants of the last period.
"""

from __future__ import annotations

import math

__all__ = [
    "DECREASE_FACTOR",
    "INCREASE_STEP",
    "LEAST",
    "MOST",
    "SHRINK",
    "SHRINK_AFTER",
    "START",
    "WIDEN",
    "LearnedMargin",
    "interactive_first",
    "recovered",
]

START = 0.03
LEAST = 0.005
MOST = 0.10
WIDEN = 0.015
SHRINK = 0.0025
SHRINK_AFTER = 5
DECREASE_FACTOR = 0.97
INCREASE_STEP = 0.01


class LearnedMargin:
    """The margin of one in-process budget of `qps` (Redis keeps the fleet's by the same rule)."""

    def __init__(self, qps: int, start: float = START) -> None:
        self.value = start
        self._shrink_after = SHRINK_AFTER * qps
        # Grants since the margin last changed, none of them answered RequestLimitExceeded.
        self._quiet = 0

    def granted(self) -> None:
        self._quiet += 1
        if self._quiet >= self._shrink_after:
            self.value = max(LEAST, self.value - SHRINK)
            self._quiet = 0

    def widen(self) -> None:
        self.value = min(MOST, self.value + WIDEN)
        self._quiet = 0


def recovered(rate: float, qps: int, changed: float, now: float, period: float) -> tuple[float, float]:
    """The pace after the quiet periods since it last changed (`changed`), and when it did."""
    if rate >= qps or now - changed < 2 * period:
        return rate, changed
    periods = math.floor((now - changed) / period) - 1
    return min(float(qps), rate + INCREASE_STEP * qps * periods), changed + periods * period


def interactive_first(interactive_grants: int, grants: int, share: float) -> bool:
    """Whether an interactive call goes before a waiting batch item, given the last period's grants."""
    return interactive_grants < share * max(1, grants)
