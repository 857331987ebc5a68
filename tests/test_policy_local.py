"""The gateway's policy over the embedded local backend's answers: its thresholds re-decide the local
model's scores, and keyword lists and detectors read the local OCR's text."""

from __future__ import annotations

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
from service.factory import build_backend
from service.server import Gateway, build_server
from testbed.local_images import encode, photo, text_image
from tests.support.gateway import open_channel, single_backend_settings
from tests.support.policy_files import policy_settings, write_policy

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
