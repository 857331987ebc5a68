# ruff: noqa: RUF001  # Chinese text uses full-width punctuation: that is what is tested.
"""The policy gate decides an answer whose text a detector must search in a worker thread (the search
takes milliseconds of Python), and every other answer on the event loop."""

from __future__ import annotations

import threading

import pytest
from moderation.v1.moderation_service_pb2 import (
    DecisionSource,
    ModerateImageRequest,
    ModerateImageResponse,
    OcrResult,
    Suggestion,
)
from opentelemetry import metrics

from backends.image_limits import ImageLimits
from common.scrub import Scrubber
from service.image_hash import ImageHash
from service.policy import detectors
from service.policy.decide import searches_text
from service.policy.detectors import Detector
from service.policy.gate import Outcome, PolicyGate
from service.policy.metrics import PolicyMetrics
from service.policy.model import DetectorConfig
from service.policy.rules import Policy, Rules

PHONE = Rules(detectors=(Detector.configured("phone", DetectorConfig(action="review")),))
URL = Rules(detectors=(Detector.configured("url", DetectorConfig(action="block")),))


def read(text: str) -> ModerateImageResponse:
    return ModerateImageResponse(
        suggestion=Suggestion.SUGGESTION_PASS,
        label="Normal",
        ocr_results=[OcrResult(scene="OCR", suggestion=Suggestion.SUGGESTION_PASS, text=text)],
    )


def test_only_text_a_detector_may_find_something_in_is_searched() -> None:
    assert searches_text(PHONE, read("加我 138 0013 8000"))
    assert not searches_text(PHONE, read("满 200 减 30"))  # too few digits for a number
    assert searches_text(URL, read("访问ｗｗｗ．ｓｐａｍ．ｃｎ"))
    assert not searches_text(URL, read("no dot here"))
    assert not searches_text(Rules(), read("加我 138 0013 8000"))
    # A shadow's detectors count too.
    assert searches_text(Rules(shadow=PHONE), read("加我 138 0013 8000"))


@pytest.fixture
def searched_on(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """The threads the phone detector searched in."""
    threads: list[threading.Thread] = []
    search = detectors.find_phone

    def recorded(text: str, regions: tuple[str, ...]) -> str | None:
        threads.append(threading.current_thread())
        return search(text, regions)

    monkeypatch.setattr(detectors, "find_phone", recorded)
    return threads


async def decided(text: str) -> ModerateImageResponse:
    gate = PolicyGate(Policy("v1", PHONE, {}), PolicyMetrics(metrics.get_meter("test"), Scrubber()))

    async def backend() -> Outcome:
        return read(text)

    answer = await gate.answer(
        ModerateImageRequest(content=b"image"), ImageHash(b"image"), ImageLimits(), backend
    )
    assert isinstance(answer, ModerateImageResponse)
    return answer


async def test_a_text_that_may_hold_a_number_is_searched_in_a_worker_thread(
    searched_on: list[threading.Thread],
) -> None:
    answer = await decided("加我微信或致电 138 0013 8000")
    assert (answer.decision.source, answer.decision.matched) == (
        DecisionSource.DECISION_SOURCE_DETECTOR,
        "138 0013 8000",
    )
    assert len(searched_on) == 1
    assert searched_on[0] is not threading.main_thread()


async def test_other_answers_are_decided_on_the_event_loop(searched_on: list[threading.Thread]) -> None:
    answer = await decided("加我微信")
    assert answer.decision.source == DecisionSource.DECISION_SOURCE_BACKEND
    assert searched_on == [threading.main_thread()]
