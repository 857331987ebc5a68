"""What one image's outcome records, read from the typed outcome, never from the status sent."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse, Suggestion
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, Tracer

from backends.errors import BackendError, Kind
from common.scrub import Scrubber
from service.errors import CallFailure, Failure, InternalFailure, failure_status, stream_stopped_status
from service.governor import Priority
from service.observe import CODE_NAMES, Observer, Outcome, access_fields, outcome_attributes
from service.telemetry import Metrics, Telemetry, setup_telemetry
from service.validation import FieldViolation, ValidationError
from tests.support.metrics import points

REQUEST = ModerateImageRequest(biz_type="policy_a", data_id="d-1")
RESULT = ModerateImageResponse(
    suggestion=Suggestion.SUGGESTION_BLOCK,
    label="Porn",
    score=97,
    backend="cloud",
    request_id="req-1",
    attempts=2,
    fallback=True,
)
CALL_FAILURE = CallFailure(
    BackendError(Kind.MISCONFIGURED, "AuthFailure", upstream_code="AuthFailure.SignatureFailure"),
    backend="cloud",
    attempts=1,
)
INVALID = ValidationError(
    [FieldViolation("data_id", "too long", "INVALID_DATA_ID"), FieldViolation("url", "bad", "INVALID_URL")]
)
INTERNAL = InternalFailure(RuntimeError("a bug"))
# The gateway's outward scrubber, holding no secret here.
OUTWARD = Scrubber()


def test_a_result_records_its_verdict_and_who_answered() -> None:
    assert outcome_attributes(REQUEST, RESULT, OUTWARD) == {
        "moderation.biz_type": "policy_a",
        "moderation.status_code": "OK",
        "moderation.suggestion": "BLOCK",
        "moderation.label": "Porn",
        "moderation.score": 97,
        "moderation.backend": "cloud",
        "moderation.backend_request_id": "req-1",
        "moderation.attempts": 2,
        "moderation.fallback": "true",
        "moderation.unmoderated": "false",
    }
    assert access_fields(REQUEST, RESULT, OUTWARD) == {
        "backend": "cloud",
        "data_id": "d-1",
        "backend_request_id": "req-1",
        "suggestion": "BLOCK",
        "attempts": 2,
        "reason": "",
        "cached": False,
    }


def test_a_cache_hit_says_so_in_the_access_line() -> None:
    hit = ModerateImageResponse()
    hit.CopyFrom(RESULT)
    hit.attempts, hit.cached = 0, True
    assert access_fields(REQUEST, hit, OUTWARD) == {
        **access_fields(REQUEST, RESULT, OUTWARD),
        "attempts": 0,
        "cached": True,
    }


@pytest.mark.parametrize(
    ("failure", "code", "reason", "backend"),
    [
        (CALL_FAILURE, "INTERNAL", "BACKEND_MISCONFIGURED", "cloud"),
        (INVALID, "INVALID_ARGUMENT", "INVALID_DATA_ID", ""),
        (INTERNAL, "INTERNAL", "INTERNAL_ERROR", ""),
    ],
)
def test_a_failure_records_its_code_reason_and_backend(
    failure: Failure, code: str, reason: str, backend: str
) -> None:
    assert outcome_attributes(REQUEST, failure, OUTWARD) == {
        "moderation.biz_type": "policy_a",
        "moderation.status_code": code,
        "moderation.error.reason": reason,
        "moderation.backend": backend,
    }
    assert access_fields(REQUEST, failure, OUTWARD) == {
        "backend": backend,
        "data_id": "d-1",
        "backend_request_id": "",
        "suggestion": "",
        "attempts": 0,
        "reason": reason,
        "cached": False,
    }


def sent_code_and_reason(failure: Failure) -> tuple[str, str]:
    """What the caller reads from the status, as any gRPC client would."""
    status = failure_status(failure, OUTWARD)
    (packed,) = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    info = error_details_pb2.ErrorInfo()
    packed.Unpack(info)
    return grpc.StatusCode(
        next(c.value for c in grpc.StatusCode if c.value[0] == status.code)
    ).name, info.reason


@pytest.mark.parametrize(
    "failure",
    [
        *(CallFailure(BackendError(kind, "no"), backend="cloud", attempts=3) for kind in Kind),
        INVALID,
        INTERNAL,
    ],
    ids=repr,
)
def test_what_is_recorded_agrees_with_the_status_the_caller_gets(failure: Failure) -> None:
    attributes = outcome_attributes(REQUEST, failure, OUTWARD)
    recorded = (attributes["moderation.status_code"], attributes["moderation.error.reason"])
    assert recorded == sent_code_and_reason(failure)


def test_every_status_code_has_its_name() -> None:
    assert set(CODE_NAMES) == set(grpc.StatusCode)
    assert CODE_NAMES[grpc.StatusCode.RESOURCE_EXHAUSTED] == "RESOURCE_EXHAUSTED"


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def telemetry(spans: InMemorySpanExporter, reader: InMemoryMetricReader) -> Iterator[Telemetry]:
    """The providers production builds, with in-memory exporters and no /metrics listener."""
    telemetry = setup_telemetry({}, span_processors=[SimpleSpanProcessor(spans)], metric_readers=[reader])
    yield telemetry
    telemetry.shutdown()


@pytest.fixture
def metrics(telemetry: Telemetry) -> Metrics:
    return telemetry.metrics


@pytest.fixture
def tracer(telemetry: Telemetry) -> Tracer:
    return telemetry.tracer


async def observed(metrics: Metrics, tracer: Tracer, outcome: Outcome, priority: Priority) -> Counter[str]:
    """`Observer.image` under a span, for an outcome that comes after a pause; returns the in-flight
    counts seen during that pause."""
    seen: Counter[str] = Counter()

    async def arriving() -> Outcome:
        await asyncio.sleep(0)
        seen.update(metrics.in_flight)
        return outcome

    with tracer.start_as_current_span("call"):
        assert (
            await Observer(metrics, OUTWARD).image("ModerateImage", REQUEST, priority, arriving()) is outcome
        )
    return seen


async def test_an_image_is_counted_in_flight_then_recorded_on_its_span_and_in_the_metrics(
    metrics: Metrics, tracer: Tracer, spans: InMemorySpanExporter, reader: InMemoryMetricReader
) -> None:
    seen = await observed(metrics, tracer, RESULT, Priority.INTERACTIVE)

    assert (seen["unary"], seen["stream"]) == (1, 0)
    assert (metrics.in_flight["unary"], metrics.in_flight["stream"]) == (0, 0)
    (span,) = spans.get_finished_spans()
    assert dict(span.attributes or {}) == outcome_attributes(REQUEST, RESULT, OUTWARD)
    assert span.status.status_code is StatusCode.UNSET
    labels = {
        "rpc.method": "ModerateImage",
        "rpc.grpc.status_code": "OK",
        "moderation.suggestion": "BLOCK",
        "moderation.label": "Porn",
    }
    assert points(reader, "moderation.requests") == [(labels, 1)]
    duration_labels = {"rpc.method": "ModerateImage", "rpc.grpc.status_code": "OK"}
    assert points(reader, "moderation.duration") == [(duration_labels, 1)]


async def test_a_failure_sets_the_span_status_and_is_logged_with_backend_and_attempts(
    metrics: Metrics,
    tracer: Tracer,
    spans: InMemorySpanExporter,
    reader: InMemoryMetricReader,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="service.observe"):
        seen = await observed(metrics, tracer, CALL_FAILURE, Priority.BATCH)

    assert seen["stream"] == 1
    (span,) = spans.get_finished_spans()
    assert (span.status.status_code, span.status.description) == (StatusCode.ERROR, "BACKEND_MISCONFIGURED")
    ((labels, count),) = points(reader, "moderation.requests")
    assert (labels["rpc.grpc.status_code"], labels["moderation.suggestion"], count) == ("INTERNAL", "", 1)
    (record,) = caplog.records
    assert record.getMessage() == (
        "backend cloud failed after 1 attempt(s): AuthFailure "
        "(upstream code 'AuthFailure.SignatureFailure', request id '')"
    )


async def test_a_bug_is_logged_with_its_traceback(
    metrics: Metrics, tracer: Tracer, caplog: pytest.LogCaptureFixture
) -> None:
    try:
        raise RuntimeError("a bug")
    except RuntimeError as error:
        bug = InternalFailure(error)
    with caplog.at_level(logging.ERROR, logger="service.observe"):
        await observed(metrics, tracer, bug, Priority.INTERACTIVE)

    (record,) = caplog.records
    assert (record.levelno, record.getMessage()) == (logging.ERROR, "unexpected error while moderating")
    assert record.exc_info is not None
    assert "RuntimeError: a bug" in caplog.text


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [record.fields for record in caplog.records if record.name == "moderation.access"]  # type: ignore[attr-defined]


def test_a_unary_call_writes_one_access_line(metrics: Metrics, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="moderation.access"):
        Observer(metrics, OUTWARD).unary_call("ModerateImage", REQUEST, INVALID, 0.25)

    (line,) = access_lines(caplog)
    assert line == {
        "rpc.method": "ModerateImage",
        "rpc.grpc.status_code": "INVALID_ARGUMENT",
        "duration_s": 0.25,
        "caller": "",
        **access_fields(REQUEST, INVALID, OUTWARD),
    }


async def test_a_stream_writes_one_access_line_counting_items_and_errors(
    metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="moderation.access"),
        Observer(metrics, OUTWARD).stream_call("StreamModerateImages") as tally,
    ):
        for outcome in (RESULT, CALL_FAILURE, RESULT, INVALID):
            tally(outcome)

    (line,) = access_lines(caplog)
    assert (line["rpc.method"], line["rpc.grpc.status_code"]) == ("StreamModerateImages", "OK")
    assert (line["items"], line["errors"]) == (4, 2)


async def test_a_stream_the_server_ends_is_logged_with_the_status_it_ended_with(
    metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    def drained(observer: Observer) -> None:
        with observer.stream_call("StreamModerateImages") as tally:
            tally(RESULT)
            tally.ended_with(stream_stopped_status("draining", 1, None))
            raise grpc.aio.AbortError

    with caplog.at_level(logging.INFO, logger="moderation.access"), pytest.raises(grpc.aio.AbortError):
        drained(Observer(metrics, OUTWARD))

    (line,) = access_lines(caplog)
    assert (line["rpc.grpc.status_code"], line["items"]) == ("UNAVAILABLE", 1)


def stream_ending_with(observer: Observer, ending: type[BaseException]) -> None:
    with observer.stream_call("BatchModerateImages") as tally:
        tally(RESULT)
        raise ending


@pytest.mark.parametrize(
    ("ending", "code"),
    [(asyncio.CancelledError, "CANCELLED"), (GeneratorExit, "CANCELLED"), (OSError, "UNKNOWN")],
)
async def test_a_stream_that_ends_abruptly_still_writes_its_access_line(
    metrics: Metrics, caplog: pytest.LogCaptureFixture, ending: type[BaseException], code: str
) -> None:
    with caplog.at_level(logging.INFO, logger="moderation.access"), pytest.raises(ending):
        stream_ending_with(Observer(metrics, OUTWARD), ending)

    (line,) = access_lines(caplog)
    assert (line["rpc.grpc.status_code"], line["items"], line["errors"]) == (code, 1, 0)
