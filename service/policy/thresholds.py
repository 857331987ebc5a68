"""Thresholds per label and sub-label: they re-decide each result's suggestion from the backend's scores,
and the overall suggestion from the results.

A result is judged by what the backend scored in it: its own label, sub-label and score (when it found
something), and each detail's sub-label score (classification results). Only the scores a threshold is
configured for count; a result with none keeps the backend's suggestion.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from moderation.v1.moderation_service_pb2 import (
    LabelResult,
    LibResult,
    ModerateImageResponse,
    ObjectResult,
    OcrResult,
    Suggestion,
)

from service.policy.model import Pair, ThresholdConfig

__all__ = ["Thresholds", "Verdict", "redecide", "severity"]

PASS, REVIEW, BLOCK = Suggestion.SUGGESTION_PASS, Suggestion.SUGGESTION_REVIEW, Suggestion.SUGGESTION_BLOCK
# The label a result carries when it found nothing.
NORMAL = "Normal"
# The local format's thresholds for any label without its own.
OTHER = "_other"
Result = LabelResult | ObjectResult | OcrResult


def severity(suggestion: Suggestion.ValueType) -> int:
    """PASS < REVIEW < BLOCK; UNSPECIFIED below them all."""
    return {PASS: 1, REVIEW: 2, BLOCK: 3}.get(suggestion, 0)


def _suggestion(pair: Pair, score: int) -> Suggestion.ValueType:
    if score >= pair.block:
        return BLOCK
    if score >= pair.review:
        return REVIEW
    return PASS


@dataclass(frozen=True)
class Verdict:
    """What a threshold decided: the suggestion, and which threshold (`Porn` or `Porn.SexBehavior`)."""

    suggestion: Suggestion.ValueType
    rule: str
    label: str
    sub_label: str
    score: int


class Thresholds:
    """One BizType's thresholds, by label."""

    def __init__(self, by_label: Mapping[str, ThresholdConfig]) -> None:
        self._by_label = dict(by_label)

    def __bool__(self) -> bool:
        return bool(self._by_label)

    def judge(self, label: str, sub_label: str, score: int) -> Verdict | None:
        """The configured verdict on one score; None when no threshold covers the label."""
        config = self._by_label.get(label) or self._by_label.get(OTHER)
        if config is None:
            return None
        rule = f"thresholds.{label if label in self._by_label else OTHER}"
        pair: Pair = config
        if sub_label and sub_label in config.sub_labels:
            pair, rule = config.sub_labels[sub_label], f"{rule}.{sub_label}"
        return Verdict(_suggestion(pair, score), rule, label, sub_label, score)


def _scores(result: Result) -> Iterator[tuple[str, str, int]]:
    """(label, sub-label, score) the backend gave in one result."""
    found = result.label not in ("", NORMAL)
    label = result.label if found else result.scene
    if found:
        yield label, result.sub_label, result.score
    if isinstance(result, LabelResult):
        for detail in result.details:
            yield label, detail.name, detail.score


def _judge_result(thresholds: Thresholds, result: Result) -> Verdict | None:
    verdicts = [v for scored in _scores(result) if (v := thresholds.judge(*scored)) is not None]
    if not verdicts:
        return None
    return max(verdicts, key=lambda v: (severity(v.suggestion), v.score))


@dataclass(frozen=True)
class _Ranked:
    """A result's final suggestion, what it names, and the threshold that decided it (None: the backend)."""

    suggestion: Suggestion.ValueType
    score: int
    label: str
    sub_label: str
    verdict: Verdict | None

    @property
    def rank(self) -> tuple[int, int]:
        return severity(self.suggestion), self.score


def _named(result: Result | LibResult) -> tuple[str, str]:
    found = result.label not in ("", NORMAL)
    return (result.label if found else getattr(result, "scene", result.label)), result.sub_label


def redecide(thresholds: Thresholds, response: ModerateImageResponse) -> Verdict | None:
    """Re-decides `response` in place by `thresholds`: each result a threshold covers, then the overall
    suggestion from every result (library matches count as the backend decided them). The threshold
    that decided the overall suggestion; None when the backend's own verdict did (the response is left
    untouched when no threshold covered any result)."""
    if not thresholds:
        return None
    ranked: list[_Ranked] = []
    results: list[Result] = [*response.label_results, *response.object_results, *response.ocr_results]
    for result in results:
        verdict = _judge_result(thresholds, result)
        if verdict is not None:
            result.suggestion = verdict.suggestion
            ranked.append(
                _Ranked(verdict.suggestion, verdict.score, verdict.label, verdict.sub_label, verdict)
            )
        else:
            ranked.append(_Ranked(result.suggestion, result.score, *_named(result), None))
    if all(r.verdict is None for r in ranked):
        return None
    libraries: list[LibResult] = list(response.lib_results)
    ranked += [_Ranked(r.suggestion, r.score, *_named(r), None) for r in libraries]
    top = max(ranked, key=lambda r: r.rank)
    response.suggestion, response.score = top.suggestion, top.score
    response.label, response.sub_label = (
        (top.label, top.sub_label) if top.suggestion != PASS else (NORMAL, "")
    )
    return top.verdict
