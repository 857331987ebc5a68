"""Traces, metrics and logs, checked as a platform team would: span trees, a real OTLP receiver,
a Prometheus scrape and the access log."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, StreamModerateImagesRequest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from emulator import Faults, ImsEmulator
from emulator.images import make_png
from service import observe, retry
from service.logs import JsonFormatter, RedactSecrets, TraceContext
from service.server import Gateway
from service.telemetry import Telemetry, setup_telemetry
from tests.support.eventually import eventually
from tests.support.gateway import SECRET_ID, SECRET_KEY, GatewayFactory, open_channel
from tests.support.otlp import trace_receiver

Stub = moderation_service_pb2_grpc.ModerationServiceStub
IMAGE = make_png(256, 256)
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def telemetry(spans: InMemorySpanExporter) -> Telemetry:
    reader = InMemoryMetricReader()
    return setup_telemetry(
        {},
        metrics_listen="127.0.0.1:0",
        span_processors=[SimpleSpanProcessor(spans)],
        metric_readers=[reader],
    )


@pytest.fixture
async def traced(make_gateway: GatewayFactory, telemetry: Telemetry) -> Gateway:
    return await make_gateway(telemetry=telemetry)


def named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


async def ended(spans: InMemorySpanExporter, name: str, count: int) -> list[ReadableSpan]:
    """The `count` spans named `name`, once all have ended: a failed call's status is sent from inside
    its handler (an abort), so its caller may see it before the server span ends."""

    def all_ended() -> list[ReadableSpan] | None:
        found = named(spans, name)
        return found if len(found) == count else None

    return await eventually(all_ended, within=5)


def children(spans: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    parent_id = parent.context.span_id
    return [s for s in spans.get_finished_spans() if s.parent is not None and s.parent.span_id == parent_id]


def events(span: ReadableSpan) -> dict[str, dict[str, object]]:
    return {event.name: dict(event.attributes or {}) for event in span.events}


async def test_unary_span_tree(traced: Gateway, spans: InMemorySpanExporter, emulator: ImsEmulator) -> None:
    async with open_channel(traced) as channel:
        await Stub(channel).ModerateImage(
            ModerateImageRequest(content=IMAGE, biz_type="policy_a", data_id="d1")
        )
    (server,) = named(spans, "/moderation.v1.ModerationService/ModerateImage")
    assert server.kind is SpanKind.SERVER
    attributes = dict(server.attributes or {})
    assert attributes["rpc.system"] == "grpc"
    assert attributes["moderation.suggestion"] == "PASS"
    assert attributes["moderation.backend"] == "tencent"
    assert attributes["moderation.biz_type"] == "policy_a"
    assert attributes["moderation.backend_request_id"]
    # Two spans a call: validation and the governor's wait are events of the server span.
    (attempt,) = children(spans, server)
    assert len(spans.get_finished_spans()) == 2
    assert set(events(server)) == {"moderation.validate", "moderation.governor.wait"}
    validated, waited = events(server)["moderation.validate"], events(server)["moderation.governor.wait"]
    assert 0 < float(validated["moderation.duration_s"]) < 1  # type: ignore[arg-type]
    assert 0 <= float(waited["moderation.duration_s"]) < 1  # type: ignore[arg-type]
    assert waited["moderation.priority"] == "interactive"
    # The attempt is the HTTP request's CLIENT span: semantic conventions and moderation.* at once.
    assert attempt.name == "moderation.backend.attempt"
    assert attempt.kind is SpanKind.CLIENT
    http = dict(attempt.attributes or {})
    assert http["http.request.method"] == "POST"
    assert http["http.response.status_code"] == 200
    assert (http["server.address"], http["server.port"]) == ("127.0.0.1", emulator.port)
    assert http["url.full"] == f"http://127.0.0.1:{emulator.port}/"
    assert int(str(http["http.request.body.size"])) > len(IMAGE) * 4 // 3
    assert (http["moderation.backend"], http["moderation.attempt"]) == ("tencent", 1)
    assert http["moderation.backend_request_id"] == attributes["moderation.backend_request_id"]


async def test_an_unsampled_call_computes_no_span_attributes(
    make_gateway: GatewayFactory, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    computed: list[str] = []
    for module, name in ((observe, "outcome_attributes"), (retry, "_attempt_attributes")):
        original = getattr(module, name)

        def spy(*args: object, _original: Any = original, _name: str = name) -> Any:
            computed.append(_name)
            return _original(*args)

        monkeypatch.setattr(module, name, spy)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    telemetry = setup_telemetry({}, span_processors=[SimpleSpanProcessor(spans)])
    gateway = await make_gateway(telemetry=telemetry)
    requests = [StreamModerateImagesRequest(request=ModerateImageRequest(content=IMAGE)) for _ in range(2)]
    async with open_channel(gateway) as channel:
        answers = [a async for a in Stub(channel).StreamModerateImages(iter(requests))]
    assert [a.WhichOneof("outcome") for a in answers] == ["result", "result"]
    assert spans.get_finished_spans() == ()
    assert computed == []


async def test_health_checks_and_reflection_get_no_span(traced: Gateway, spans: InMemorySpanExporter) -> None:
    async with open_channel(traced) as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        async for _ in reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        ):
            pass
        await Stub(channel).ModerateImage(ModerateImageRequest(content=IMAGE))
    server_spans = [s.name for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert server_spans == ["/moderation.v1.ModerationService/ModerateImage"]


async def test_a_retried_call_shows_every_attempt(
    traced: Gateway, spans: InMemorySpanExporter, emulator: ImsEmulator
) -> None:
    emulator.config.faults = Faults(fail_next=["model_call_failed"])
    async with open_channel(traced) as channel:
        result = await Stub(channel).ModerateImage(ModerateImageRequest(content=IMAGE))
    assert result.attempts == 2
    first, second = sorted(named(spans, "moderation.backend.attempt"), key=lambda s: s.start_time or 0)
    assert first.status.status_code is StatusCode.ERROR
    assert dict(first.attributes or {})["moderation.upstream_code"] == "ResourceUnavailable.ModelCallFailed"
    assert dict(second.attributes or {})["moderation.retry_reason"] == "ResourceUnavailable.ModelCallFailed"
    assert dict(second.attributes or {})["moderation.attempt"] == 2
    assert first.kind is second.kind is SpanKind.CLIENT
    assert dict(first.attributes or {})["error.type"] == "unavailable"


async def test_a_failed_call_sets_error_status(
    traced: Gateway, spans: InMemorySpanExporter, emulator: ImsEmulator
) -> None:
    emulator.config.faults = Faults(fail_next=["UnauthorizedOperation.Unauthorized"])
    async with open_channel(traced) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await Stub(channel).ModerateImage(ModerateImageRequest(content=IMAGE))
    (server,) = await ended(spans, "/moderation.v1.ModerationService/ModerateImage", 1)
    assert server.status.status_code is StatusCode.ERROR
    assert dict(server.attributes or {})["rpc.grpc.status_code"] == caught.value.code().value[0] != 0
    assert dict(server.attributes or {})["moderation.error.reason"] == "BACKEND_ACCOUNT_UNAVAILABLE"
    everything = json.dumps([json.loads(s.to_json()) for s in spans.get_finished_spans()])
    assert SECRET_KEY not in everything
    assert SECRET_ID not in everything


async def test_stream_items_are_linked_spans_of_their_own(
    traced: Gateway, spans: InMemorySpanExporter
) -> None:
    requests = [
        StreamModerateImagesRequest(correlation_id=f"c{i}", request=ModerateImageRequest(content=IMAGE))
        for i in range(3)
    ]
    async with open_channel(traced) as channel:
        answers = [a async for a in Stub(channel).StreamModerateImages(iter(requests))]
    assert len(answers) == 3
    (stream,) = named(spans, "/moderation.v1.ModerationService/StreamModerateImages")
    items = named(spans, "moderation.item")
    assert len(items) == 3
    assert len({item.context.trace_id for item in items} | {stream.context.trace_id}) == 4
    for item in items:
        assert item.parent is None
        assert [link.context.span_id for link in item.links] == [stream.context.span_id]
        assert [s.name for s in children(spans, item)] == ["moderation.backend.attempt"]
        assert set(events(item)) == {"moderation.validate", "moderation.governor.wait"}
        assert events(item)["moderation.governor.wait"]["moderation.priority"] == "batch"


async def test_callers_traceparent_becomes_the_parent(traced: Gateway, spans: InMemorySpanExporter) -> None:
    metadata = (("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"), ("baggage", "tenant=acme"))
    async with open_channel(traced) as channel:
        await Stub(channel).ModerateImage(ModerateImageRequest(content=IMAGE), metadata=metadata)
    (server,) = named(spans, "/moderation.v1.ModerationService/ModerateImage")
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == PARENT_ID


async def test_metrics_are_scraped_over_http(traced: Gateway, telemetry: Telemetry) -> None:
    url = f"http://127.0.0.1:{telemetry.metrics_port}/metrics"
    async with open_channel(traced) as channel, httpx.AsyncClient() as client:
        stub = Stub(channel)
        await stub.ModerateImage(ModerateImageRequest(content=IMAGE))
        first = (await client.get(url)).text
        await stub.ModerateImage(ModerateImageRequest(content=IMAGE))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.ModerateImage(ModerateImageRequest(content=b"not an image at all..."))
        second = (await client.get(url)).text
    ok = (
        'moderation_requests_total{moderation_label="Normal",moderation_suggestion="PASS",'
        'rpc_grpc_status_code="OK",rpc_method="ModerateImage"}'
    )
    assert f"{ok} 1.0" in first
    assert f"{ok} 2.0" in second
    assert 'rpc_grpc_status_code="INVALID_ARGUMENT"' in second
    for name in (
        "moderation_duration_seconds_bucket",
        "moderation_backend_attempt_duration_seconds_bucket",
        "moderation_governor_grants_total",
        "moderation_governor_wait_seconds_bucket",
        "moderation_governor_rate",
        "moderation_in_flight",
    ):
        assert name in second, name


async def test_in_flight_gauge_counts_calls_while_they_run(
    traced: Gateway, telemetry: Telemetry, emulator: ImsEmulator
) -> None:
    url = f"http://127.0.0.1:{telemetry.metrics_port}/metrics"
    unary = 'moderation_in_flight{moderation_kind="unary"}'
    emulator.config.latency = 0.5
    async with open_channel(traced) as channel, httpx.AsyncClient() as client:
        calls = [
            asyncio.ensure_future(Stub(channel).ModerateImage(ModerateImageRequest(content=IMAGE)))
            for _ in range(3)
        ]
        # Scraped once all three wait on the emulator, however slowly they got there (it counts them
        # on its own thread: there is nothing to await but time).
        await eventually(lambda: emulator.stats.max_in_flight >= 3, within=5, every=0.01)
        during = (await client.get(url)).text
        await asyncio.gather(*calls)
        after = (await client.get(url)).text
    assert f"{unary} 3.0" in during
    assert f"{unary} 0.0" in after


async def test_traces_reach_a_real_otlp_receiver(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with trace_receiver() as (collector, endpoint):
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        telemetry = setup_telemetry()
        gateway = await make_gateway(telemetry=telemetry)
        async with open_channel(gateway) as channel:
            await Stub(channel).ModerateImage(ModerateImageRequest(content=IMAGE))
        await asyncio.wait_for(collector.received.wait(), timeout=10)
    assert "/moderation.v1.ModerationService/ModerateImage" in collector.spans
    assert "moderation.backend.attempt" in collector.spans


async def test_access_log_carries_trace_ids_and_no_secret_or_image_bytes(
    traced: Gateway, spans: InMemorySpanExporter, emulator: ImsEmulator
) -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(TraceContext())
    handler.addFilter(RedactSecrets([SECRET_ID, SECRET_KEY]))
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.DEBUG)
    try:
        async with open_channel(traced) as channel:
            stub = Stub(channel)
            await stub.ModerateImage(ModerateImageRequest(content=IMAGE, data_id="img-42"))
            emulator.config.secret_key = "wrong"
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.ModerateImage(ModerateImageRequest(content=IMAGE, data_id="img-43"))
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    access = [line for line in lines if line["logger"] == "moderation.access"]
    ok, failed = access
    (first_server, second_server) = sorted(
        await ended(spans, "/moderation.v1.ModerationService/ModerateImage", 2),
        key=lambda s: s.start_time or 0,
    )
    assert ok["rpc.method"] == "ModerateImage"
    assert ok["rpc.grpc.status_code"] == "OK"
    assert (ok["data_id"], ok["backend"]) == ("img-42", "tencent")
    assert ok["backend_request_id"]
    assert ok["trace_id"] == format(first_server.context.trace_id, "032x")
    assert ok["span_id"] == format(first_server.context.span_id, "016x")
    assert failed["rpc.grpc.status_code"] == "INTERNAL"
    assert failed["reason"] == "BACKEND_MISCONFIGURED"
    assert failed["trace_id"] == format(second_server.context.trace_id, "032x")
    text = buffer.getvalue()
    assert SECRET_KEY not in text
    assert SECRET_ID not in text
    assert IMAGE[:64].hex() not in text
