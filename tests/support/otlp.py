"""A loopback OTLP/gRPC trace receiver on the test's own event loop: the spans a real exporter sends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

__all__ = ["TraceReceiver", "trace_receiver"]


class TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every export (its span names, and its bytes as they arrived)."""

    def __init__(self) -> None:
        self.spans: list[str] = []
        self.exports: list[bytes] = []
        self.received = asyncio.Event()

    async def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.exports.append(request.SerializeToString())
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(span.name for span in scope_spans.spans)
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


@contextlib.asynccontextmanager
async def trace_receiver() -> AsyncIterator[tuple[TraceReceiver, str]]:
    """The receiver and the endpoint for OTEL_EXPORTER_OTLP_ENDPOINT; stopped on the way out."""
    receiver = TraceReceiver()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield receiver, f"http://127.0.0.1:{port}"
    finally:
        await server.stop(None)
