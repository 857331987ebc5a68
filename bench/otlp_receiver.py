"""A loopback OTLP/gRPC trace receiver that only counts what it gets, by span name.

It runs in this process on gRPC's own threads, not on the bench's event loop: stopping the traced
gateway blocks that loop while the gateway flushes its last spans to the receiver.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class SpanCounter(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: Counter[str] = Counter()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        names = Counter(
            span.name
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        )
        with self._lock:
            self._names.update(names)
        return trace_service_pb2.ExportTraceServiceResponse()

    def names(self) -> Counter[str]:
        with self._lock:
            return Counter(self._names)


@contextlib.contextmanager
def otlp_receiver() -> Iterator[tuple[str, SpanCounter]]:
    """Yields the endpoint for OTEL_EXPORTER_OTLP_ENDPOINT and the counter."""
    counter = SpanCounter()
    server = grpc.server(ThreadPoolExecutor(max_workers=2, thread_name_prefix="otlp-receiver"))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(counter, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", counter
    finally:
        server.stop(None)
