"""How a decision is named in the access log, the span and the metric labels."""

from __future__ import annotations

from moderation.v1.moderation_service_pb2 import Decision, DecisionSource

from common.scrub import Scrubber

__all__ = ["SOURCE_NAMES", "decision_fields"]

# `THRESHOLD`, `KEYWORD_LIST`, ... by the enum's value.
SOURCE_NAMES = {value: name.removeprefix("DECISION_SOURCE_") for name, value in DecisionSource.items()}


def decision_fields(decision: Decision, scrubber: Scrubber) -> dict[str, str]:
    """The decision's fields, the rule and matched text through the outward `scrubber` and cut short."""
    return {
        "source": SOURCE_NAMES[decision.source],
        "rule": scrubber.excerpt(decision.rule),
        "matched": scrubber.excerpt(decision.matched),
        "policy_version": decision.policy_version,
    }
