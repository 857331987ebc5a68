"""The `moderate` table and summary, from answers made here (moderation_client/output.py alone)."""

from __future__ import annotations

from moderation.v1.moderation_service_pb2 import LabelResult, ModerateImageResponse, Suggestion
from moderation_client.output import Failure, Outcome, Tally, printable, shown_score, summary, table


def local_pass(request_id: str = "") -> ModerateImageResponse:
    """A PASS as the local backend answers it: no request id, the models' scores in label_results."""
    return ModerateImageResponse(
        suggestion=Suggestion.SUGGESTION_PASS,
        label="Normal",
        backend="local",
        request_id=request_id,
        label_results=[LabelResult(scene="Porn", score=18), LabelResult(scene="Ad", score=3)],
    )


def test_a_column_empty_in_every_row_is_left_out() -> None:
    lines = table([Outcome("a.png", local_pass()), Outcome("b.png", Failure("INTERNAL", "boom", None))])
    assert lines[0].split() == ["TARGET", "SUGGESTION", "LABEL", "SCORE", "BACKEND"]
    assert lines[1].split() == ["a.png", "SUGGESTION_PASS", "Normal", "18", "local"]
    assert lines[2].split() == ["b.png", "ERROR", "INTERNAL:", "boom"]


def test_a_column_one_row_fills_is_kept_for_all() -> None:
    lines = table([Outcome("a.png", local_pass()), Outcome("b.png", local_pass("req-1"))])
    assert lines[0].split()[-1] == "REQUEST_ID"
    assert lines[2].split()[-1] == "req-1"


def test_a_pass_shows_the_highest_model_score_and_a_verdict_its_own() -> None:
    assert shown_score(local_pass()) == 18
    block = ModerateImageResponse(suggestion=Suggestion.SUGGESTION_BLOCK, label="Porn", score=97)
    block.label_results.add(scene="Sexy", score=99)
    assert shown_score(block) == 97


def test_control_and_format_characters_are_escaped() -> None:
    assert printable("a\x1b[2J\tb\u202ec\x7f") == "a\\x1b[2J\\x09b\\u202ec\\x7f"
    assert printable("猫 café") == "猫 café"
    tally = Tally()
    tally.add(ModerateImageResponse(suggestion=Suggestion.SUGGESTION_REVIEW, label="Ad\x07"))
    tally.add(Failure("UNAVAILABLE", "gone", None))
    assert summary(tally) == (
        "2 images: 1 ERROR, 1 SUGGESTION_REVIEW\nlabels: 1 Ad\\x07\nerrors: 1 UNAVAILABLE"
    )
