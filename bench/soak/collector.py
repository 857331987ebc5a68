"""An OTLP/gRPC trace receiver in the bench process: the gateway exports its spans here as it would to
a collector in production, and each export is scanned for secrets exactly as it arrived."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from bench.soak.leaks import SecretScan

_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
# The span of one stream item, from the gateway starting to answer it to its answer (README, Traces).
ITEM_SPAN = "moderation.item"


@dataclass(frozen=True)
class ItemSpan:
    # Wall-clock seconds (the gateway's span clock) the gateway started and finished the item.
    start: float
    end: float


class SpanCollector:
    def __init__(self, scan: SecretScan) -> None:
        self._scan = scan
        self.spans: Counter[str] = Counter()
        self.exports = 0
        # Each stream item's span by its correlation id.
        self.items: dict[str, ItemSpan] = {}

    async def export(self, raw: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        request = ExportTraceServiceRequest.FromString(raw)
        spans = [
            span
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
        self.spans.update(span.name for span in spans)
        for span in spans:
            if span.name == ITEM_SPAN:
                attributes = {a.key: a.value.string_value for a in span.attributes}
                self.items[attributes.get("moderation.correlation_id", "")] = ItemSpan(
                    span.start_time_unix_nano / 1e9, span.end_time_unix_nano / 1e9
                )
        self.exports += 1
        # The raw bytes, not a re-encoding: protobuf stores strings verbatim, so a secret in any
        # attribute, event or resource of these spans is in them as is.
        self._scan.scan("spans", raw, count=len(spans), where=f"(export {self.exports})")
        return ExportTraceServiceResponse().SerializeToString()


@contextlib.asynccontextmanager
async def receiving(collector: SpanCollector) -> AsyncIterator[str]:
    """Serves OTLP trace exports on loopback until the block ends; yields the endpoint URL."""
    server = grpc.aio.server()
    # Bytes in and out (no deserializer), so `export` sees the request exactly as sent.
    handler = grpc.unary_unary_rpc_method_handler(collector.export)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, {"Export": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.stop(None)
