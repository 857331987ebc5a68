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
from service.factory import build_backend
from service.observe import SUGGESTION_NAMES
from service.policy.fields import SOURCE_NAMES
from service.server import Gateway, build_server
from service.settings import load_settings
from testbed.local_images import encode, near_duplicates, photo, text_image
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


def legacy_settings(folder: Path) -> dict[str, str]:
    """The four deprecated local settings, each naming a file or folder made in `folder`."""
    policy = folder / "local_policy.toml"
    policy.write_text(
        '[default]\nchecks = ["porn"]\n[default.thresholds]\nPorn = { review = 0, block = 101 }\n'
    )
    keywords, allow, deny = folder / "keywords", folder / "allow", folder / "deny"
    for made in (keywords, allow, deny / "Porn"):
        made.mkdir(parents=True)
    (keywords / "ads.toml").write_text('id = "ads"\nname = "Ads"\nlabel = "Ad"\nwords = ["free money"]\n')
    (allow / "coffee-sample.png").write_bytes(encode(photo("coffee"), "PNG"))
    photo("chelsea").save(deny / "Porn" / "cat-sample.png")
    return {
        "MODERATION_LOCAL_POLICY": str(policy),
        "MODERATION_LOCAL_KEYWORDS": str(keywords),
        "MODERATION_LOCAL_ALLOW_DIR": str(allow),
        "MODERATION_LOCAL_DENY_DIR": str(deny),
    }


async def test_the_deprecated_local_policy_folds_into_the_gateway_s_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    legacy = legacy_settings(tmp_path)
    settings = load_settings(
        {
            "MODERATION_BACKEND": "local",
            "MODERATION_LISTEN": "127.0.0.1:0",
            "MODERATION_METRICS_LISTEN": "off",
            "MODERATION_CACHE": "off",
            **legacy,
        }
    )
    with caplog.at_level(logging.WARNING, logger="service.server"):
        gateway = build_server(settings, build_backend(settings))
    (warning,) = [r for r in caplog.records if r.getMessage().startswith("deprecated:")]
    assert warning.fields == {"deprecated": list(legacy), "use": "MODERATION_POLICY_FILE"}  # type: ignore[attr-defined]
    await gateway.start()
    try:
        answers = {
            name: await moderate(gateway, ModerateImageRequest(content=content))
            for name, content in {
                "photo": encode(photo("astronaut"), "JPEG"),
                "spam": encode(text_image(["F.R.E.E  M O N E Y inside"]), "PNG"),
                "denied copy": encode(near_duplicates(photo("chelsea"))["jpeg_q40"]),
                "allowed": (tmp_path / "allow" / "coffee-sample.png").read_bytes(),
                "allowed copy": encode(near_duplicates(photo("coffee"))["jpeg_q40"]),
            }.items()
        }
    finally:
        await gateway.stop()
    decided = {
        name: (
            a.backend,
            SUGGESTION_NAMES[a.suggestion],
            a.label,
            SOURCE_NAMES[a.decision.source],
            a.decision.rule,
        )
        for name, a in answers.items()
    }
    assert decided == {
        # The local thresholds re-decide the model's score; `checks` no longer limits what it reports.
        "photo": ("local", "REVIEW", "Porn", "THRESHOLD", "thresholds.Porn"),
        "spam": ("local", "BLOCK", "Ad", "KEYWORD_LIST", "ads"),
        # Image lists answer before any backend call; a near-duplicate denies, never allows: the allowed
        # image's copy goes to the backend, and the thresholds decide it like any other.
        "denied copy": ("", "BLOCK", "Porn", "DENY_LIST", "local_deny.Porn"),
        "allowed": ("", "PASS", "Normal", "ALLOW_LIST", "local_allow"),
        "allowed copy": ("local", "REVIEW", "Porn", "THRESHOLD", "thresholds.Porn"),
    }
    assert answers["spam"].decision.matched == "free money"
    assert answers["denied copy"].decision.matched == "cat-sample"
    # The backend itself matched nothing: its OCR result carries the text only.
    assert all(not detail.keywords for result in answers["spam"].ocr_results for detail in result.details)
