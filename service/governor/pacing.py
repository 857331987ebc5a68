"""The pacing rules every governor follows, whichever store keeps its slots (in-process: `local.py`;
Redis: `schedule.py`, whose scripts are generated from these numbers), so the embedded default and the
fleet cannot drift apart.

- **The margin, learned.** Grants are paced `window x (1 + margin) / rate` apart. IMS counts arrivals in
  any sliding second, and the network moves each of ours by up to a few tens of milliseconds, so a second
  of its arrivals can hold a little more than a second of our sends: the margin covers that. It starts
  at `START` (3 %, safe for 0-20 ms of jitter), widens by `WIDEN` on each RequestLimitExceeded (at most
  once a period) and shrinks by `SHRINK` every `SHRINK_EVERY` seconds without one, down to `LEAST`: a
  quiet path creeps towards the whole budget, a jittery one stays safe.
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
    "SHRINK_EVERY",
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
SHRINK_EVERY = 5.0
DECREASE_FACTOR = 0.97
INCREASE_STEP = 0.01


class LearnedMargin:
    """The margin of one in-process budget (Redis keeps the fleet's by the same rule)."""

    def __init__(self, start: float = START) -> None:
        self._value = start
        # Set by the first reading: the quiet time counts from there.
        self._changed: float | None = None

    def at(self, now: float) -> float:
        """The margin now, after the shrinking earned by the quiet time since it last changed."""
        if self._changed is None:
            self._changed = now
        steps = math.floor((now - self._changed) / SHRINK_EVERY)
        if steps > 0:
            self._value = max(LEAST, self._value - steps * SHRINK)
            self._changed += steps * SHRINK_EVERY
        return self._value

    def widen(self, now: float) -> None:
        self._value = min(MOST, self.at(now) + WIDEN)
        self._changed = now


def recovered(rate: float, qps: int, changed: float, now: float, period: float) -> tuple[float, float]:
    """The pace after the quiet periods since it last changed (`changed`), and when it did."""
    if rate >= qps or now - changed < 2 * period:
        return rate, changed
    periods = math.floor((now - changed) / period) - 1
    return min(float(qps), rate + INCREASE_STEP * qps * periods), changed + periods * period


def interactive_first(interactive_grants: int, grants: int, share: float) -> bool:
    """Whether an interactive call goes before a waiting batch item, given the last period's grants."""
    return interactive_grants < share * max(1, grants)
