"""Every instrument the policy records, declared in one place (the metrics reference is generated from
the declarations): `moderation_decisions_total`, `moderation_shadow_compared_total`,
`moderation_shadow_disagreements_total` and `moderation_policy_reload_failed`."""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from common.scrub import Scrubber
from service.telemetry import BoundedLabel, DictCounter

__all__ = ["PolicyMetrics"]

# Distinct biz_type (and shadow label) values the metrics keep; later ones are counted as `other`.
MAX_LABEL_VALUES = 200


class PolicyMetrics:
    def __init__(self, meter: metrics.Meter, outward: Scrubber) -> None:
        # The gateway's outward scrubber: the policy's labels, spans and log lines pass through it.
        self.outward = outward
        self._biz_types = BoundedLabel(MAX_LABEL_VALUES)
        self.shadow_labels = BoundedLabel(MAX_LABEL_VALUES)
        self.decisions = DictCounter(
            meter,
            "moderation.decisions",
            unit="{answer}",
            description="Answers by biz_type, the source of their decision and suggestion",
        )
        self.shadow_compared = DictCounter(
            meter,
            "moderation.shadow.compared",
            unit="{answer}",
            description="Answers the shadow policy decided beside the live one, by biz_type",
        )
        self.shadow_disagreements = DictCounter(
            meter,
            "moderation.shadow.disagreements",
            unit="{answer}",
            description="Answers the shadow policy would have decided otherwise, by biz_type, the shadow's "
            "label, and the live and shadow suggestions",
        )
        # Set by the reloader: True while the files on disk are rejected.
        self.reload_failed = False
        meter.create_observable_gauge(
            "moderation.policy.reload_failed",
            callbacks=[self._observe_reload],
            description="1 while the policy files on disk are rejected (the previous policy is in use), "
            "else 0",
        )

    def biz_type(self, value: str) -> str:
        """A request's biz_type as a label value: scrubbed, cut short and bounded."""
        return self._biz_types(self.outward.excerpt(value))

    def _observe_reload(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(int(self.reload_failed))]
