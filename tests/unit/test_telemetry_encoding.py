"""The gateway's span encoding writes the very message the OTLP exporter's own encoder writes."""

from __future__ import annotations

import enum

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as exporters_encoding
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.telemetry_encoding import GrpcSpanExporter, encode_spans

CALLER = {
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "vendor=abc,other=1",
}


class Shade(enum.IntEnum):
    DARK = 2


def spans() -> tuple[ReadableSpan, ...]:
    """Two resources, two scopes, a remote parent with a trace state, links, events, a status, and
    attributes of every kind a span may hold (and one protobuf cannot)."""
    finished: list[ReadableSpan] = []
    for service in ("gateway", "other"):
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": service, "replicas": 3}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        server = provider.get_tracer("moderation-gateway")
        other = provider.get_tracer("lib", "1.2", schema_url="https://example.test/s", attributes={"a": "b"})
        with server.start_as_current_span(
            "/moderation.v1.ModerationService/ModerateImage",
            context=propagate.extract(CALLER),
            kind=trace.SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "moderation.score": 93, "moderation.ratio": 0.5},
        ) as call:
            call.set_attributes({"flag": True, "words": ("a", "b"), "numbers": (1, 2), "shade": Shade.DARK})
            call.set_attribute("too.large", 2**70)
            call.add_event("moderation.validate", {"moderation.duration_s": 0.001})
            with other.start_as_current_span(
                "moderation.backend.attempt",
                kind=trace.SpanKind.CLIENT,
                links=[trace.Link(call.get_span_context(), {"why": "retry"})],
            ) as attempt:
                attempt.set_status(trace.StatusCode.ERROR, "unavailable")
            # A root span of its own, as a stream item's is.
            with other.start_as_current_span("moderation.item", context=otel_context.Context()):
                pass
        finished += memory.get_finished_spans()
        provider.shutdown()
    return tuple(finished)


def test_the_request_is_the_exporters_own() -> None:
    finished = spans()
    assert len(finished) == 6
    assert encode_spans(finished) == exporters_encoding(finished)


def test_the_grpc_exporter_encodes_with_it() -> None:
    finished = spans()
    exporter = GrpcSpanExporter(endpoint="127.0.0.1:1", insecure=True)
    try:
        assert exporter._translate_data(finished) == exporters_encoding(finished)
    finally:
        exporter.shutdown()
