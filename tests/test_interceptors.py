"""The gateway's three interceptors on every RPC shape, through their one dispatch (service/interceptors.py).

The moderation service has unary and stream-stream methods only, so a tiny service with all four
shapes is served by a real grpc.aio server on loopback, behind the interceptors in the gateway's
order (spans, auth, the undecodable-request guard), beside a health service left open.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from common.scrub import Scrubber
from service.auth import CALLER, CallerAuth
from service.interceptors import AroundCalls, Behaviour, Context, Method
from service.telemetry import ServerSpans
from service.undecodable import RejectUndecodable
from tests.support.eventually import eventually
from tests.support.richstatus import rich_error

SERVICE = "test.Shapes"
TOKEN = "checkout-0123456789abcdef"
BEARER = (("authorization", f"Bearer {TOKEN}"),)
# Field 1 as a length-delimited record claiming more bytes than follow: no message type parses it.
UNDECODABLE = b"\x0a\xff\xff\xff\xff\x0f"
SHAPES = ["unary-unary", "unary-stream", "stream-unary", "stream-stream"]
METHODS = {shape: f"/{SERVICE}/{shape.title().replace('-', '')}" for shape in SHAPES}


class Shapes:
    """One method of each shape, answering with the caller's name; `ran` lists the methods that ran."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def _answer(self, method: str, value: str) -> StringValue:
        self.ran.append(method)
        return StringValue(value=f"{CALLER.get('')}:{value}")

    async def unary_unary(self, request: StringValue, context: Context) -> StringValue:
        return self._answer("unary-unary", request.value)

    async def unary_stream(self, request: StringValue, context: Context) -> None:
        # The other style grpc allows for a streaming response: written, not yielded.
        for _ in range(2):
            await context.write(self._answer("unary-stream", request.value))

    async def stream_unary(self, requests: AsyncIterator[StringValue], context: Context) -> StringValue:
        return self._answer("stream-unary", "+".join([r.value async for r in requests]))

    async def stream_stream(
        self, requests: AsyncIterator[StringValue], context: Context
    ) -> AsyncIterator[StringValue]:
        async for request in requests:
            yield self._answer("stream-stream", request.value)

    def handler(self) -> grpc.GenericRpcHandler:
        codec = {"request_deserializer": StringValue.FromString, "response_serializer": _serialize}
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "UnaryUnary": grpc.unary_unary_rpc_method_handler(self.unary_unary, **codec),
                "UnaryStream": grpc.unary_stream_rpc_method_handler(self.unary_stream, **codec),
                "StreamUnary": grpc.stream_unary_rpc_method_handler(self.stream_unary, **codec),
                "StreamStream": grpc.stream_stream_rpc_method_handler(self.stream_stream, **codec),
            },
        )


def _serialize(message: StringValue) -> bytes:
    return message.SerializeToString()


def _raw(data: bytes) -> bytes:
    return data


async def call(
    channel: grpc.aio.Channel,
    shape: str,
    messages: list[bytes],
    metadata: tuple[tuple[str, str], ...] = BEARER,
) -> list[str]:
    """Sends `messages` as they are to the method of `shape`; its answers' values, or the call's error."""
    method = METHODS[shape]
    codec = {"request_serializer": _raw, "response_deserializer": StringValue.FromString}
    options = {"metadata": metadata, "timeout": 10}
    if shape == "unary-unary":
        answers = [await channel.unary_unary(method, **codec)(messages[0], **options)]
    elif shape == "unary-stream":
        answers = [a async for a in channel.unary_stream(method, **codec)(messages[0], **options)]
    elif shape == "stream-unary":
        answers = [await channel.stream_unary(method, **codec)(iter(messages), **options)]
    else:
        answers = [a async for a in channel.stream_stream(method, **codec)(iter(messages), **options)]
    return [a.value for a in answers]


def values(*texts: str) -> list[bytes]:
    return [StringValue(value=t).SerializeToString() for t in texts]


@dataclass(frozen=True)
class Served:
    """A channel to the test service, served behind the three interceptors; what ran, what was traced."""

    channel: grpc.aio.Channel
    shapes: Shapes
    spans: InMemorySpanExporter


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    shapes, spans, provider = Shapes(), InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    open_services = [health.SERVICE_NAME]
    server = grpc.aio.server(
        interceptors=[
            ServerSpans(provider.get_tracer(__name__), untraced_services=open_services),
            CallerAuth({TOKEN: "checkout"}, mutual_tls=False, open_services=open_services),
            RejectUndecodable(Scrubber()),
        ]
    )
    server.add_generic_rpc_handlers([shapes.handler()])
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Served(channel, shapes, spans)
    finally:
        await server.stop(None)
        provider.shutdown()


async def only_span(spans: InMemorySpanExporter) -> ReadableSpan:
    # The server span ends once the handler has returned, which may be after the client has its status:
    # polled for up to 5 s.
    [span] = await eventually(spans.get_finished_spans, within=5, every=0.01)
    return span


def span_attributes(shape: str, code: grpc.StatusCode) -> dict[str, object]:
    return {
        "rpc.system": "grpc",
        "rpc.service": SERVICE,
        "rpc.method": METHODS[shape].rpartition("/")[2],
        "rpc.grpc.status_code": code.value[0],
    }


@pytest.mark.parametrize(
    ("shape", "sent", "answered"),
    [
        ("unary-unary", ["a"], ["checkout:a"]),
        ("unary-stream", ["a"], ["checkout:a", "checkout:a"]),
        ("stream-unary", ["a", "b"], ["checkout:a+b"]),
        ("stream-stream", ["a", "b"], ["checkout:a", "checkout:b"]),
    ],
)
async def test_every_shape_is_answered_through_every_interceptor(
    served: Served, shape: str, sent: list[str], answered: list[str]
) -> None:
    # The answers name the caller: auth identified it.
    assert await call(served.channel, shape, values(*sent)) == answered
    span = await only_span(served.spans)
    assert (span.name, span.attributes) == (METHODS[shape], span_attributes(shape, grpc.StatusCode.OK))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer wrong-token-0000000000"),)])
async def test_an_unauthenticated_call_is_refused_on_every_shape(
    served: Served, shape: str, metadata: tuple[tuple[str, str], ...]
) -> None:
    # One message: grpc's client reports INTERNAL, not the status sent, now and then (7 calls in 100
    # measured) when the server ends a call while the client is still sending.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(served.channel, shape, values("a"), metadata)
    error = rich_error(caught.value)
    assert (error.code, error.info.reason) == (grpc.StatusCode.UNAUTHENTICATED, "CALLER_UNAUTHENTICATED")
    assert served.shapes.ran == []
    # Auth sits inside the spans: the refused call has its span, with its code.
    assert (await only_span(served.spans)).attributes == span_attributes(
        shape, grpc.StatusCode.UNAUTHENTICATED
    )


@pytest.mark.parametrize(
    ("shape", "ran"),
    [
        # A unary request never reaches its method.
        ("unary-unary", []),
        ("unary-stream", []),
        # A stream's method sees the stream end where the undecodable message was, and answers.
        ("stream-unary", ["stream-unary"]),
        ("stream-stream", []),
    ],
)
async def test_undecodable_bytes_are_invalid_argument_on_every_shape(
    served: Served, shape: str, ran: list[str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(served.channel, shape, [UNDECODABLE])
    error = rich_error(caught.value)
    assert (error.code, error.info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNDECODABLE_REQUEST")
    assert served.shapes.ran == ran


async def test_the_open_service_needs_no_credentials_and_gets_no_span(served: Served) -> None:
    stub = health_pb2_grpc.HealthStub(served.channel)
    answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert served.spans.get_finished_spans() == ()


class _Passing(AroundCalls):
    async def around(self, method: Method, behaviour: Behaviour, request: object, context: Context) -> object:
        return await behaviour(request, context)


class _Details:
    def __init__(self, method: str) -> None:
        self.method = method


async def _echo(request: object, context: Context) -> object:
    return request


async def test_a_method_is_wrapped_once_not_on_every_call() -> None:
    unary, health_check = METHODS["unary-unary"], "/grpc.health.v1.Health/Check"
    handlers = {name: grpc.unary_unary_rpc_method_handler(_echo) for name in (unary, health_check)}
    interceptor = _Passing(skip_services=[health.SERVICE_NAME])

    async def continuation(details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return handlers.get(details.method)

    async def intercepted(method: str) -> grpc.RpcMethodHandler:
        return await interceptor.intercept_service(continuation, _Details(method))

    first = await intercepted(unary)
    assert first is not handlers[unary]
    assert await intercepted(unary) is first
    # A method whose handler grpc replaced gets a new wrapper.
    handlers[unary] = grpc.unary_unary_rpc_method_handler(_echo)
    assert await intercepted(unary) is not first
    # An unknown method has no handler; a skipped service's handler is returned as it is.
    assert await intercepted(f"/{SERVICE}/Missing") is None
    assert await intercepted(health_check) is handlers[health_check]
