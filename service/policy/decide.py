"""Applying one BizType's rules to a backend's answer: thresholds re-decide it, then keyword lists and
detectors may raise it. The answer says which rule decided (`Decision`)."""

from __future__ import annotations

from moderation.v1.moderation_service_pb2 import Decision, DecisionSource, ModerateImageResponse, Suggestion

from service.policy.keywords import read_text
from service.policy.model import Action
from service.policy.rules import Rules
from service.policy.thresholds import BLOCK, REVIEW, redecide, severity

__all__ = ["ACTIONS", "decide", "searches_text"]

ACTIONS: dict[Action, Suggestion.ValueType] = {"review": REVIEW, "block": BLOCK}
# A keyword or detector hit's score: the text is there, whatever a model would have said.
TEXT_HIT_SCORE = 100


def decide(rules: Rules, backend: ModerateImageResponse, version: str) -> ModerateImageResponse:
    """A copy of `backend`'s answer decided by `rules` (the original is left as the cache stored it)."""
    answer = ModerateImageResponse()
    answer.CopyFrom(backend)
    decision = answer.decision
    decision.policy_version = version
    decision.source = DecisionSource.DECISION_SOURCE_BACKEND
    if answer.unmoderated:
        # Nothing scored the image: the route's fail-closed REVIEW stands.
        return answer
    verdict = redecide(rules.thresholds, answer)
    if verdict is not None:
        decision.source, decision.rule = DecisionSource.DECISION_SOURCE_THRESHOLD, verdict.rule
        decision.matched = f"{verdict.label}/{verdict.sub_label}" if verdict.sub_label else verdict.label
    text = read_text(answer) if rules.keywords is not None or rules.detectors else ""
    if not text:
        return answer
    keyword = rules.keywords.find(text) if rules.keywords is not None else None
    if keyword is not None:
        _raise(
            answer,
            ACTIONS[keyword.list.action],
            keyword.list.label,
            DecisionSource.DECISION_SOURCE_KEYWORD_LIST,
            keyword.list.name,
            keyword.entry,
        )
    for detector in rules.detectors:
        if severity(ACTIONS[detector.action]) <= severity(answer.suggestion):
            continue  # it could not change the answer: skip the search
        hit = detector.find(text)
        if hit is not None:
            _raise(
                answer,
                ACTIONS[detector.action],
                detector.label,
                DecisionSource.DECISION_SOURCE_DETECTOR,
                detector.kind,
                hit.matched,
            )
    return answer


def searches_text(rules: Rules, backend: ModerateImageResponse) -> bool:
    """Whether deciding `backend` by `rules` (or their shadow) may run a detector's search: milliseconds
    of Python, for the caller to run off the event loop. A few µs when it says no."""
    detectors = (*rules.detectors, *(rules.shadow.detectors if rules.shadow is not None else ()))
    if not detectors or backend.unmoderated:
        return False
    text = read_text(backend)
    return bool(text) and any(detector.may_find(text) for detector in detectors)


def _raise(
    answer: ModerateImageResponse,
    suggestion: Suggestion.ValueType,
    label: str,
    source: DecisionSource.ValueType,
    rule: str,
    matched: str,
) -> None:
    """A text rule's verdict, when it is more severe than the answer's."""
    if severity(suggestion) <= severity(answer.suggestion):
        return
    answer.suggestion, answer.label, answer.sub_label, answer.score = suggestion, label, "", TEXT_HIT_SCORE
    answer.decision.CopyFrom(
        Decision(source=source, rule=rule, matched=matched, policy_version=answer.decision.policy_version)
    )
