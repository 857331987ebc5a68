"""The gateway's policy over the embedded local backend's answers: its thresholds re-decide the local
model's scores, and keyword lists and detectors read the local OCR's text. The local backend's own
deprecated policy settings fold into it, with one warning."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import (
    DecisionSource,
    ModerateImageRequest,
    ModerateImageResponse,
    Suggestion,
)

from backends.local.settings import LocalSettings
from bench.local_images import encode, photo, text_image
from service.factory import build_backend
from service.server import Gateway, build_server
from service.settings import load_settings
from tests.conftest import open_channel, single_backend_settings
from tests.policy_files import policy_settings, write_policy

Stub = moderation_service_pb2_grpc.ModerationServiceStub
POLICY = """
[keyword_lists.spam]
file = "spam.txt"
label = "Ad"
action = "block"

[default]
keyword_lists = ["spam"]

[default.thresholds]
Porn = { review = 0, block = 101 }

[default.detectors]
phone = { action = "block" }
"""


async def moderate(gateway: Gateway, request: ModerateImageRequest) -> ModerateImageResponse:
    """One call, with room for the local OCR on a busy 2-core machine."""
    async with open_channel(gateway) as channel:
        answer: ModerateImageResponse = await Stub(channel).ModerateImage(request, timeout=60)
        return answer


@pytest.fixture
async def local_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    policy = write_policy(tmp_path, POLICY, **{"spam.txt": "free money\n"})
    settings = single_backend_settings("local", LocalSettings(), **policy_settings(policy))
    gateway = build_server(settings, build_backend(settings))
    await gateway.start()
    yield gateway
    await gateway.stop()


async def test_thresholds_re_decide_the_local_model_s_scores(local_gateway: Gateway) -> None:
    answer = await moderate(local_gateway, ModerateImageRequest(content=encode(photo("astronaut"), "JPEG")))
    assert (answer.backend, answer.suggestion, answer.label) == (
        "local",
        Suggestion.SUGGESTION_REVIEW,
        "Porn",
    )
    assert answer.decision.source == DecisionSource.DECISION_SOURCE_THRESHOLD


async def test_keyword_lists_and_detectors_read_the_local_ocr_s_text(local_gateway: Gateway) -> None:
    spam = encode(text_image(["F.R.E.E  M O N E Y inside"]), "PNG")
    answer = await moderate(local_gateway, ModerateImageRequest(content=spam))
    assert (answer.suggestion, answer.label) == (Suggestion.SUGGESTION_BLOCK, "Ad")
    assert (answer.decision.source, answer.decision.rule) == (
        DecisionSource.DECISION_SOURCE_KEYWORD_LIST,
        "spam",
    )
    phone = encode(text_image(["加我微信或致电 138 0013 8000"]), "PNG")
    answer = await moderate(local_gateway, ModerateImageRequest(content=phone))
    assert answer.decision.source == DecisionSource.DECISION_SOURCE_DETECTOR
    assert answer.decision.rule == "phone"


async def test_the_deprecated_local_policy_folds_into_the_gateway_s_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    legacy = tmp_path / "local_policy.toml"
    legacy.write_text(
        '[default]\nchecks = ["porn"]\n[default.thresholds]\nPorn = { review = 0, block = 101 }\n'
    )
    keywords = tmp_path / "keywords"
    keywords.mkdir()
    (keywords / "ads.toml").write_text('id = "ads"\nname = "Ads"\nlabel = "Ad"\nwords = ["free money"]\n')
    settings = load_settings(
        {
            "MODERATION_BACKEND": "local",
            "MODERATION_LISTEN": "127.0.0.1:0",
            "MODERATION_METRICS_LISTEN": "off",
            "MODERATION_CACHE": "off",
            "MODERATION_LOCAL_POLICY": str(legacy),
            "MODERATION_LOCAL_KEYWORDS": str(keywords),
        }
    )
    with caplog.at_level(logging.WARNING, logger="service.server"):
        gateway = build_server(settings, build_backend(settings))
    (warning,) = [r for r in caplog.records if r.getMessage().startswith("deprecated:")]
    assert warning.fields == {  # type: ignore[attr-defined]
        "deprecated": ["MODERATION_LOCAL_POLICY", "MODERATION_LOCAL_KEYWORDS"],
        "use": "MODERATION_POLICY_FILE",
    }
    await gateway.start()
    try:
        # The local thresholds re-decide the model's score; `checks` no longer limits what it reports.
        photo_answer = await moderate(
            gateway, ModerateImageRequest(content=encode(photo("astronaut"), "JPEG"))
        )
        assert (photo_answer.suggestion, photo_answer.decision.rule) == (
            Suggestion.SUGGESTION_REVIEW,
            "thresholds.Porn",
        )
        spam = encode(text_image(["F.R.E.E  M O N E Y inside"]), "PNG")
        answer = await moderate(gateway, ModerateImageRequest(content=spam))
    finally:
        await gateway.stop()
    assert (answer.suggestion, answer.label) == (Suggestion.SUGGESTION_BLOCK, "Ad")
    assert (answer.decision.source, answer.decision.rule, answer.decision.matched) == (
        DecisionSource.DECISION_SOURCE_KEYWORD_LIST,
        "ads",
        "free money",
    )
    # The backend itself matched nothing: its OCR result carries the text only.
    assert all(not detail.keywords for result in answer.ocr_results for detail in result.details)
