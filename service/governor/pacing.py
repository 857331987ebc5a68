"""The pacing rules every governor follows, whichever store keeps its slots (in-process: `local.py`;
Redis: `schedule.py`, whose scripts are generated from these numbers), so the embedded default and the
fleet cannot drift apart.

- **The margin, learned.** Grants are paced `window x (1 + margin) / rate` apart. IMS counts arrivals in
  any sliding second, and the network moves each of ours by up to a few tens of milliseconds, so a second
  of its arrivals can hold a little more than a second of our sends: the margin covers that (20 ms of
  jitter needs 2 %). It starts at `START` (safe for 0-20 ms of jitter) and shrinks by `SHRINK` for every
  `SHRINK_AFTER` seconds' worth of the budget granted without a RequestLimitExceeded, down to a floor: a
  quiet path spends all of the budget but `LEAST` within seconds. A RequestLimitExceeded (at most one a
  period) raises the floor, and the margin with it, to `FLOOR_ABOVE` over the margin the refused request
  was sent under (not the smaller one in force when its answer came back): a jittery path pays for its
  jitter once, not on every probe. The floor sinks back by `FORGET` per shrink, a step per minute of full
  budget, so a path that calms down is trusted again. Grants, not time, are the evidence: an idle budget
  learns nothing, and keeps its margin. (Simulated and measured in `make bench -- --only fleet`: 20 ms
  of jitter costs one RequestLimitExceeded per start and leaves 97 % of the budget; none leaves 99 %.)
- **Backoff.** A RequestLimitExceeded the margin cannot explain also lowers the pace by 3 %
  (`DECREASE_FACTOR`, once a period): one sent under at least the margin the last one taught, so the
  path got worse or somebody else spends this account's budget. The pace climbs back linearly by
  `INCREASE_STEP` of the budget each period after one quiet period. A lone throttle, which the margin
  answers, costs only the margin: lowering the pace for it too cost 0.6 % of a 12 s run.
- **Priorities.** While both wait, an interactive call (unary) goes first as long as interactive calls
  hold less than their share of the grants of the last period.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = [
    "CLOCK_TICK",
    "DECREASE_FACTOR",
    "FLOOR_ABOVE",
    "FORGET",
    "INCREASE_STEP",
    "LEAST",
    "MOST",
    "NOT_TAUGHT",
    "SHRINK",
    "SHRINK_AFTER",
    "START",
    "LearnedMargin",
    "MarginHistory",
    "interactive_first",
    "recovered",
    "unexplained",
]

START = 0.02
LEAST = 0.005
MOST = 0.10
SHRINK = 0.0025
# Seconds' worth of the budget (qps x this many grants) between two shrinks: START to LEAST in 4.5 s.
SHRINK_AFTER = 0.75
FLOOR_ABOVE = 0.0075
# The floor sinks by SHRINK per minute's worth of shrinks.
FORGET = SHRINK * SHRINK_AFTER / 60
DECREASE_FACTOR = 0.97
INCREASE_STEP = 0.01
# What `taught` is before any RequestLimitExceeded: above any margin, so the first one is the margin's.
NOT_TAUGHT = 1.0
# A slot due within this long is granted now. uvloop's clock moves in whole milliseconds, so a shorter
# sleep wakes in the same tick and sleeps again: at a fast pace a dispatcher spun ~260 times a grant
# (0.13 ms of CPU a call at 100,000/s). Never more than this early: well within the least margin (5 ms).
CLOCK_TICK = 0.001
# How long the margins in force are remembered: longer than any attempt takes to be answered.
HISTORY = 60.0


class MarginHistory:
    """The margins requests were sent under over the last HISTORY seconds, by when they were sent: which
    one a refused request was sent under."""

    def __init__(self, value: float) -> None:
        self._changes: deque[tuple[float, float]] = deque([(-math.inf, value)])

    def record(self, now: float, value: float) -> None:
        if value != self._changes[-1][1]:
            self._changes.append((now, value))
        while len(self._changes) > 1 and self._changes[1][0] <= now - HISTORY:
            self._changes.popleft()

    def at(self, when: float) -> float:
        """The margin in force at `when` (the oldest remembered, if `when` is older)."""
        older = (value for changed, value in reversed(self._changes) if changed <= when)
        return next(older, self._changes[0][1])


class LearnedMargin:
    """The margin of one in-process budget of `qps` (Redis keeps the fleet's by the same rule)."""

    def __init__(self, qps: int, start: float = START) -> None:
        self.value = start
        # What the margin may not shrink below: raised by each RequestLimitExceeded, sinking back slowly.
        self.floor = min(LEAST, start)
        # The floor the last RequestLimitExceeded raised the margin to (it does not sink with the floor).
        self.taught = NOT_TAUGHT
        self._history = MarginHistory(start)
        self._shrink_after = max(1, math.ceil(SHRINK_AFTER * qps))
        # Grants since the margin last changed, none of them answered RequestLimitExceeded.
        self._quiet = 0

    def granted(self, now: float) -> None:
        self._quiet += 1
        if self._quiet >= self._shrink_after:
            self.floor = max(LEAST, self.floor - FORGET)
            self._set(now, max(self.floor, self.value - SHRINK))

    def rate_limited(self, sent_at: float, now: float) -> bool:
        """A request sent at `sent_at` was refused: the margin then was too small for this path. True if
        the margin cannot explain it, so the pace must come down too (`unexplained`)."""
        sent_under = self._history.at(sent_at)
        lower_pace = unexplained(sent_under, self.taught)
        self.taught = self.floor = min(MOST, sent_under + FLOOR_ABOVE)
        self._set(now, max(self.value, self.floor))
        return lower_pace

    def _set(self, now: float, value: float) -> None:
        self.value = value
        self._quiet = 0
        self._history.record(now, value)


def unexplained(sent_under: float, taught: float) -> bool:
    """Whether a request refused under the margin `sent_under` was sent under the one the last refusal
    `taught` (within a shrink of it: the floor sinks by FORGET a shrink, and a minute of shrinks is one
    SHRINK), not under one from before that lesson (at least FLOOR_ABOVE below it): then the margin is
    not what fell short. The Redis scripts apply the same test."""
    return sent_under > taught - SHRINK


def recovered(rate: float, qps: int, changed: float, now: float, period: float) -> tuple[float, float]:
    """The pace after the quiet periods since it last changed (`changed`), and when it did."""
    if rate >= qps or now - changed < 2 * period:
        return rate, changed
    periods = math.floor((now - changed) / period) - 1
    return min(float(qps), rate + INCREASE_STEP * qps * periods), changed + periods * period


def interactive_first(interactive_grants: int, grants: int, share: float) -> bool:
    """Whether an interactive call goes before a waiting batch item, given the last period's grants."""
    return interactive_grants < share * max(1, grants)
