"""The gateway's policy against the emulator, through a real gateway and gRPC client: thresholds
re-decide answers (cached ones too, without a backend call), keyword lists and detectors read the text
the backend found, image lists answer before any backend call, and every answer says why."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

import pytest
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import (
    BatchModerateImagesRequest,
    DecisionSource,
    ModerateImageRequest,
    StreamModerateImagesRequest,
    Suggestion,
)
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from emulator import ImsEmulator
from emulator.images import make_png
from service.policy.loading import load_policy
from service.telemetry import setup_telemetry
from tests.support.gateway import GatewayFactory, moderate, open_channel
from tests.support.policy_files import policy_settings, write_policy

Stub = moderation_service_pb2_grpc.ModerationServiceStub
PASS, REVIEW, BLOCK = Suggestion.SUGGESTION_PASS, Suggestion.SUGGESTION_REVIEW, Suggestion.SUGGESTION_BLOCK
PORN_90 = make_png(64, 64, "IMSEMU:Block:Porn:SexBehavior:90")
CLEAN = make_png(64, 64)


def points(reader: InMemoryMetricReader, name: str) -> dict[tuple[str, ...], float]:
    """A counter's values by its attributes' values, in the order recorded."""
    data = reader.get_metrics_data()
    found = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        attributes = point.attributes or {}
                        found[tuple(str(value) for value in attributes.values())] = point.value  # type: ignore[union-attr]
    return found


async def test_thresholds_re_decide_the_backend_s_answer_per_biz_type(
    tmp_path: Path, make_gateway: GatewayFactory
) -> None:
    policy = write_policy(
        tmp_path,
        """
        [default.thresholds]
        Porn = { review = 50, block = 95 }

        [biz_types.kids_app]
        thresholds.Porn = { review = 10, block = 20 }
        """,
    )
    gateway = await make_gateway(**policy_settings(policy))
    default = await moderate(gateway, ModerateImageRequest(content=PORN_90))
    assert (default.suggestion, default.label, default.score) == (REVIEW, "Porn", 90)
    assert default.decision.source == DecisionSource.DECISION_SOURCE_THRESHOLD
    assert default.decision.rule == "thresholds.Porn"
    assert default.decision.policy_version == load_policy(policy).version
    kids = await moderate(
        gateway,
        ModerateImageRequest(
            content=make_png(64, 64, "IMSEMU:Review:Porn:PornHuman:25"), biz_type="kids_app"
        ),
    )
    assert kids.suggestion == BLOCK


async def test_without_a_policy_answers_are_the_backend_s_as_they_were(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway()
    answer = await moderate(gateway, ModerateImageRequest(content=PORN_90))
    assert answer.suggestion == BLOCK
    assert not answer.HasField("decision")


async def test_a_threshold_change_re_decides_cached_answers_without_a_backend_call(
    tmp_path: Path, make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    path = write_policy(tmp_path, "[default.thresholds]\nPorn = { review = 50, block = 80 }\n")
    gateway = await make_gateway(cache="memory", **policy_settings(path))
    first = await moderate(gateway, ModerateImageRequest(content=PORN_90))
    assert first.suggestion == BLOCK
    write_policy(tmp_path, "# lenient\n[default.thresholds]\nPorn = { review = 50, block = 95 }\n")
    assert gateway.policy_watcher is not None
    await gateway.policy_watcher.check()
    again = await moderate(gateway, ModerateImageRequest(content=PORN_90))
    assert (again.cached, again.suggestion) == (True, REVIEW)
    assert again.decision.policy_version == load_policy(path).version != first.decision.policy_version
    assert emulator.stats.billed == 1


async def test_keyword_lists_catch_evasive_spellings_in_the_text_the_backend_read(
    tmp_path: Path, make_gateway: GatewayFactory
) -> None:
    policy = write_policy(
        tmp_path,
        """
        [keyword_lists.spam]
        file = "spam.txt"
        label = "Ad"
        action = "block"

        [default]
        keyword_lists = ["spam"]
        """,
        **{"spam.txt": "# money offers\nfree money\n加微信\n"},
    )
    gateway = await make_gateway(**policy_settings(policy))
    # The emulator reads the sub-label into the image's text: "emulated text with f_r_e_e_m_o_n_e_y inside".
    evasive = make_png(64, 64, "IMSEMU:Pass:Spam:F_R_E_E_M_o_n_e_y:10:ocr")
    answer = await moderate(gateway, ModerateImageRequest(content=evasive))
    assert (answer.suggestion, answer.label) == (BLOCK, "Ad")
    assert answer.decision.source == DecisionSource.DECISION_SOURCE_KEYWORD_LIST
    assert (answer.decision.rule, answer.decision.matched) == ("spam", "free money")
    clean = await moderate(
        gateway, ModerateImageRequest(content=make_png(64, 64, "IMSEMU:Pass:Spam:freedom:10:ocr"))
    )
    assert clean.suggestion == PASS


async def test_phone_numbers_and_urls_in_the_image_s_text_are_detected(
    tmp_path: Path, make_gateway: GatewayFactory
) -> None:
    policy = write_policy(
        tmp_path,
        """
        [default.detectors]
        phone = { action = "review" }
        url = { action = "block", label = "Ad" }
        """,
    )
    gateway = await make_gateway(**policy_settings(policy))
    phone = await moderate(
        gateway, ModerateImageRequest(content=make_png(64, 64, "IMSEMU:Pass:Contact:13800138000:10:ocr"))
    )
    assert (phone.suggestion, phone.label) == (REVIEW, "Ad")
    assert phone.decision.source == DecisionSource.DECISION_SOURCE_DETECTOR
    assert (phone.decision.rule, phone.decision.matched) == ("phone", "13800138000")
    url = await moderate(
        gateway, ModerateImageRequest(content=make_png(64, 64, "IMSEMU:Pass:Contact:spam_example_com:10:ocr"))
    )
    assert url.suggestion == PASS  # "spam_example_com" is no URL


async def test_listed_images_are_answered_without_a_backend_call(
    tmp_path: Path, make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    denied, allowed = PORN_90, make_png(64, 64, "IMSEMU:Block:Terror:Gun:99")
    policy = write_policy(
        tmp_path,
        """
        [image_lists.banned]
        file = "banned.sha256"
        kind = "deny"
        label = "Illegal"

        [image_lists.trusted]
        file = "trusted.sha256"
        kind = "allow"

        [default]
        image_lists = ["banned", "trusted"]
        """,
        **{
            "banned.sha256": f"{hashlib.sha256(denied).hexdigest()} case-1234\n",
            "trusted.sha256": f"# our own artwork\n{hashlib.sha256(allowed).hexdigest().upper()}\n",
        },
    )
    gateway = await make_gateway(cache="memory", **policy_settings(policy))
    deny = await moderate(gateway, ModerateImageRequest(content=denied, data_id="d1"))
    assert (deny.suggestion, deny.label, deny.data_id, deny.backend, deny.attempts) == (
        BLOCK,
        "Illegal",
        "d1",
        "",
        0,
    )
    assert deny.decision.source == DecisionSource.DECISION_SOURCE_DENY_LIST
    assert (deny.decision.rule, deny.decision.matched) == ("banned", "case-1234")
    allow = await moderate(gateway, ModerateImageRequest(content=allowed))
    assert allow.suggestion == PASS
    assert allow.decision.source == DecisionSource.DECISION_SOURCE_ALLOW_LIST
    assert allow.decision.matched == hashlib.sha256(allowed).hexdigest()
    assert emulator.stats.billed == 0
    # Not cached as a backend answer: without the lists, the backend is asked.
    write_policy(tmp_path, "# no lists\n")
    assert gateway.policy_watcher is not None
    await gateway.policy_watcher.check()
    assert (await moderate(gateway, ModerateImageRequest(content=denied))).decision.source == (
        DecisionSource.DECISION_SOURCE_BACKEND
    )
    assert emulator.stats.billed == 1


async def test_the_decision_is_in_the_access_log_the_span_and_the_metric(
    tmp_path: Path, make_gateway: GatewayFactory, access_log: io.StringIO
) -> None:
    reader, spans = InMemoryMetricReader(), InMemorySpanExporter()
    telemetry = setup_telemetry({}, metric_readers=[reader], span_processors=[SimpleSpanProcessor(spans)])
    policy = write_policy(tmp_path, "[default.thresholds]\nPorn = { review = 50, block = 95 }\n")
    gateway = await make_gateway(telemetry, **policy_settings(policy))
    await moderate(gateway, ModerateImageRequest(content=PORN_90, biz_type="forum"))
    assert points(reader, "moderation.decisions") == {("forum", "THRESHOLD", "REVIEW"): 1}
    expected = {
        "source": "THRESHOLD",
        "rule": "thresholds.Porn",
        "matched": "Porn/SexBehavior",
        "policy_version": load_policy(policy).version,
    }
    line = json.loads(access_log.getvalue().splitlines()[-1])
    assert line["decision"] == expected
    (server,) = [span for span in spans.get_finished_spans() if span.name.endswith("/ModerateImage")]
    attributes = server.attributes or {}
    assert {key: attributes[f"moderation.decision.{key}"] for key in expected} == expected


async def test_shadow_disagreements_are_counted_and_never_change_an_answer(
    tmp_path: Path, make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    reader = InMemoryMetricReader()
    policy = write_policy(
        tmp_path,
        """
        [default.thresholds]
        Porn = { review = 50, block = 80 }

        [default.shadow]
        thresholds.Porn = { review = 50, block = 95 }
        """,
    )
    gateway = await make_gateway(setup_telemetry({}, metric_readers=[reader]), **policy_settings(policy))
    with caplog.at_level(logging.INFO, logger="service.policy.shadow"):
        for image in (PORN_90, PORN_90, CLEAN):
            answer = await moderate(gateway, ModerateImageRequest(content=image, data_id="d7"))
            assert answer.suggestion == (BLOCK if image is PORN_90 else PASS)
    assert points(reader, "moderation.shadow.disagreements") == {("", "Porn", "BLOCK", "REVIEW"): 2}
    assert points(reader, "moderation.shadow.compared") == {("",): 3}
    sampled = [r.getMessage() for r in caplog.records if r.name == "service.policy.shadow"]
    assert len(sampled) == 1
    assert "live BLOCK Porn by thresholds.Porn, shadow REVIEW Porn" in sampled[0]


async def test_batch_and_stream_items_are_decided_as_unary_calls_are(
    tmp_path: Path, make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    denied = make_png(64, 64, color=(10, 20, 30))
    policy = write_policy(
        tmp_path,
        """
        [image_lists.banned]
        file = "banned.sha256"
        kind = "deny"

        [default]
        image_lists = ["banned"]
        thresholds.Porn = { review = 50, block = 95 }
        """,
        **{"banned.sha256": hashlib.sha256(denied).hexdigest() + "\n"},
    )
    gateway = await make_gateway(**policy_settings(policy))
    items = [ModerateImageRequest(content=denied), ModerateImageRequest(content=PORN_90)]
    async with open_channel(gateway) as channel:
        stub = Stub(channel)
        batch = BatchModerateImagesRequest(
            items=[
                BatchModerateImagesRequest.Item(correlation_id=str(i), request=r) for i, r in enumerate(items)
            ]
        )
        batched = {a.index: a.result async for a in stub.BatchModerateImages(batch, timeout=10)}
        streamed = {
            a.index: a.result
            async for a in stub.StreamModerateImages(
                iter(StreamModerateImagesRequest(request=r) for r in items), timeout=10
            )
        }
    for answers in (batched, streamed):
        assert (answers[0].suggestion, answers[0].decision.source) == (
            BLOCK,
            DecisionSource.DECISION_SOURCE_DENY_LIST,
        )
        assert (answers[1].suggestion, answers[1].decision.source) == (
            REVIEW,
            DecisionSource.DECISION_SOURCE_THRESHOLD,
        )
    assert emulator.stats.billed == 2
