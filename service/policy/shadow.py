"""Shadow policy: a candidate BizType policy decided beside the live one on live traffic. It never
changes an answer; where the two disagree it is counted by label and suggestions, and a sample logged,
so a team sees what a threshold change would do before it makes it."""

from __future__ import annotations

import logging
import time

from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse

from common.scrub import LABEL
from service.observe import SUGGESTION_NAMES
from service.policy.metrics import PolicyMetrics

__all__ = ["SAMPLE_INTERVAL", "ShadowTally"]

log = logging.getLogger(__name__)

# At most one disagreement is logged per this many seconds: a sample, not a flood.
SAMPLE_INTERVAL = 10.0


class ShadowTally:
    def __init__(self, metrics: PolicyMetrics) -> None:
        self._metrics = metrics
        self._last_logged = -SAMPLE_INTERVAL

    def compare(
        self, request: ModerateImageRequest, live: ModerateImageResponse, shadow: ModerateImageResponse
    ) -> None:
        scrubber = self._metrics.outward
        biz_type = self._metrics.biz_type(request.biz_type)
        self._metrics.shadow_compared.add((("biz_type", biz_type),))
        if (live.suggestion, live.label) == (shadow.suggestion, shadow.label):
            return
        label = self._metrics.shadow_labels(scrubber.token(shadow.label, LABEL))
        live_name, shadow_name = SUGGESTION_NAMES[live.suggestion], SUGGESTION_NAMES[shadow.suggestion]
        self._metrics.shadow_disagreements.add(
            (("biz_type", biz_type), ("label", label), ("live", live_name), ("shadow", shadow_name))
        )
        now = time.monotonic()
        if now - self._last_logged >= SAMPLE_INTERVAL:
            self._last_logged = now
            log.info(
                "shadow policy disagrees (biz_type %r, data_id %r): live %s %s by %s, shadow %s %s by %s",
                biz_type,
                scrubber.excerpt(request.data_id),
                live_name,
                scrubber.token(live.label, LABEL),
                live.decision.rule or "the backend",
                shadow_name,
                label,
                shadow.decision.rule or "the backend",
            )
