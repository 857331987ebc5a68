"""Thresholds re-deciding one backend answer (service.policy.thresholds, service.policy.decide)."""

from __future__ import annotations

from moderation.v1.moderation_service_pb2 import (
    DecisionSource,
    LabelDetail,
    LabelResult,
    LibResult,
    ModerateImageResponse,
    ObjectResult,
    Suggestion,
)

from service.policy.decide import decide
from service.policy.model import ThresholdConfig
from service.policy.rules import Rules
from service.policy.thresholds import Thresholds

PASS, REVIEW, BLOCK = Suggestion.SUGGESTION_PASS, Suggestion.SUGGESTION_REVIEW, Suggestion.SUGGESTION_BLOCK


def answer(porn: int, *, suggestion: Suggestion.ValueType, sexy_detail: int = 3) -> ModerateImageResponse:
    """An IMS-like answer: a Porn finding scored `porn`, a Sexy scene that found nothing."""
    found = suggestion != PASS
    return ModerateImageResponse(
        suggestion=suggestion,
        label="Porn" if found else "Normal",
        sub_label="SexBehavior" if found else "",
        score=porn,
        label_results=[
            LabelResult(
                scene="Porn",
                suggestion=suggestion,
                label="Porn" if found else "Normal",
                sub_label="SexBehavior" if found else "",
                score=porn,
                details=[LabelDetail(name="SexBehavior", score=porn), LabelDetail(name="PornHuman", score=2)],
            ),
            LabelResult(
                scene="Sexy",
                suggestion=PASS,
                label="Normal",
                score=1,
                details=[LabelDetail(name="SexyDress", score=sexy_detail)],
            ),
        ],
        object_results=[ObjectResult(scene="QrCode", suggestion=PASS, label="Normal")],
        backend="tencent",
    )


def rules(**thresholds: ThresholdConfig) -> Rules:
    return Rules(thresholds=Thresholds(thresholds))


def test_a_raised_block_threshold_turns_a_block_into_a_review() -> None:
    decided = decide(rules(Porn=ThresholdConfig(review=50, block=95)), answer(90, suggestion=BLOCK), "v1")
    assert decided.suggestion == REVIEW
    assert (decided.label, decided.sub_label, decided.score) == ("Porn", "SexBehavior", 90)
    assert decided.label_results[0].suggestion == REVIEW
    assert decided.decision.source == DecisionSource.DECISION_SOURCE_THRESHOLD
    assert (decided.decision.rule, decided.decision.matched) == ("thresholds.Porn", "Porn/SexBehavior")
    assert decided.decision.policy_version == "v1"


def test_a_lowered_threshold_blocks_what_the_backend_passed() -> None:
    decided = decide(rules(Porn=ThresholdConfig(review=10, block=20)), answer(25, suggestion=PASS), "v1")
    assert decided.suggestion == BLOCK
    assert decided.label == "Porn"
    assert decided.score == 25


def test_everything_under_the_thresholds_passes_as_normal() -> None:
    decided = decide(rules(Porn=ThresholdConfig(review=95, block=99)), answer(90, suggestion=BLOCK), "v1")
    assert (decided.suggestion, decided.label, decided.sub_label) == (PASS, "Normal", "")


def test_a_sub_label_threshold_overrides_its_label_s() -> None:
    config = ThresholdConfig.model_validate(
        {"review": 50, "block": 80, "sub_labels": {"SexyDress": {"review": 1, "block": 2}}}
    )
    decided = decide(rules(Sexy=config), answer(5, suggestion=PASS, sexy_detail=3), "v1")
    assert decided.suggestion == BLOCK
    assert (decided.label, decided.sub_label) == ("Sexy", "SexyDress")
    assert decided.decision.rule == "thresholds.Sexy.SexyDress"


def test_a_label_without_thresholds_is_left_as_the_backend_decided() -> None:
    backend = answer(90, suggestion=BLOCK)
    decided = decide(rules(Terror=ThresholdConfig(review=1, block=2)), backend, "v1")
    assert decided.suggestion == BLOCK
    assert decided.decision.source == DecisionSource.DECISION_SOURCE_BACKEND
    decided.ClearField("decision")
    assert decided == backend


def test_the_backend_s_answer_is_not_changed_in_place() -> None:
    backend = answer(90, suggestion=BLOCK)
    decide(rules(Porn=ThresholdConfig(review=95, block=99)), backend, "v1")
    assert backend.suggestion == BLOCK
    assert backend.label_results[0].suggestion == BLOCK


def test_a_library_match_the_thresholds_do_not_cover_still_counts() -> None:
    backend = answer(90, suggestion=BLOCK)
    backend.lib_results.append(LibResult(scene="Similar", suggestion=BLOCK, label="Porn", score=99))
    decided = decide(rules(Porn=ThresholdConfig(review=95, block=99)), backend, "v1")
    assert decided.suggestion == BLOCK
    assert decided.decision.source == DecisionSource.DECISION_SOURCE_BACKEND


def test_an_unmoderated_answer_keeps_its_review() -> None:
    backend = ModerateImageResponse(suggestion=REVIEW, unmoderated=True)
    decided = decide(rules(Porn=ThresholdConfig(review=95, block=99)), backend, "v1")
    assert decided.suggestion == REVIEW
    assert decided.decision.source == DecisionSource.DECISION_SOURCE_BACKEND
