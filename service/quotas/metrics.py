"""The quotas' metrics: used and limit per caller and quota, refusals, soft thresholds, store transitions.

Prometheus names: `moderation_quota_used`, `moderation_quota_limit` (by `caller`, `quota`),
`moderation_quota_refused_total` (by `caller`, `quota`), `moderation_quota_soft_reached_total` (by
`caller`, `quota`, `threshold`), `moderation_quota_store_transitions_total` (by `state`, `mode`).
The `caller` label is the gateway's bounded one; quota names come from the routing file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from service.quotas.calendar import Clock
from service.quotas.config import Quota, QuotaBook
from service.telemetry import BoundedLabel

__all__ = ["QuotaMetrics"]


class QuotaMetrics:
    def __init__(
        self, meter: metrics.Meter, callers: BoundedLabel, book: Callable[[], QuotaBook], clock: Clock
    ) -> None:
        self._callers = callers
        self._book = book
        self._clock = clock
        # (caller, quota name) -> (the period's end, the count last seen in it).
        self._used: dict[tuple[str, str], tuple[float, int]] = {}
        meter.create_observable_gauge(
            "moderation.quota.used",
            callbacks=[self._observe_used],
            unit="{call}",
            description="Billed calls counted against each caller's quota in its current period",
        )
        meter.create_observable_gauge(
            "moderation.quota.limit",
            callbacks=[self._observe_limit],
            unit="{call}",
            description="Each caller's quota of billed calls per period",
        )
        self._refused = meter.create_counter(
            "moderation.quota.refused", unit="{call}", description="Calls refused by a hard quota"
        )
        self._soft = meter.create_counter(
            "moderation.quota.soft_reached",
            unit="{event}",
            description="Soft quotas reaching 80 % and 100 % of their limit, by threshold",
        )
        self._transitions = meter.create_counter(
            "moderation.quota.store_transitions",
            unit="{event}",
            description="The quota store (Redis) becoming unreachable (down) or reachable again (up)",
        )

    def _labels(self, caller: str, quota: Quota) -> dict[str, str]:
        return {"caller": self._callers(caller), "quota": quota.name}

    def saw(self, quota: Quota, period_end: float, used: int) -> None:
        self._used[(quota.caller, quota.name)] = (period_end, used)

    def refused(self, quota: Quota) -> None:
        self._refused.add(1, self._labels(quota.caller, quota))

    def soft_reached(self, quota: Quota, percent: int) -> None:
        self._soft.add(1, {**self._labels(quota.caller, quota), "threshold": str(percent)})

    def store_transition(self, state: str, mode: str) -> None:
        self._transitions.add(1, {"state": state, "mode": mode})

    def _observe_used(self, options: CallbackOptions) -> Iterable[Observation]:
        now = self._clock()
        return [
            Observation(used if now < end else 0, self._labels(quota.caller, quota))
            for quotas in self._book().by_caller.values()
            for quota in quotas
            for end, used in [self._used.get((quota.caller, quota.name), (0.0, 0))]
        ]

    def _observe_limit(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(quota.limit, self._labels(quota.caller, quota))
            for quotas in self._book().by_caller.values()
            for quota in quotas
        ]
