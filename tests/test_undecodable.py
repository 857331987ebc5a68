"""Raw bytes that are not a protobuf message, on every method of a real gateway: INVALID_ARGUMENT."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2
from moderation.v1.moderation_service_pb2 import (
    ModerateImageRequest,
    StreamModerateImagesRequest,
    StreamModerateImagesResponse,
)

from emulator import ImsEmulator
from emulator.images import make_png
from service.logs import RateLimitedLog
from service.server import Gateway
from tests.support.raw_calls import EVERY_METHOD, SERVICE, UNDECODABLE, as_is, call_raw
from tests.support.richstatus import rich_error


def assert_undecodable(error: grpc.aio.AioRpcError) -> None:
    rich = rich_error(error)
    assert (rich.code, rich.info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNDECODABLE_REQUEST")
    assert "Error" not in rich.message, rich.message
    assert "Exception" not in rich.message, rich.message


@pytest.mark.parametrize("method", EVERY_METHOD)
async def test_undecodable_bytes_get_invalid_argument_on_every_method(
    channel: grpc.aio.Channel, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_raw(channel, method, [UNDECODABLE])
    assert_undecodable(caught.value)
    # No traceback: grpc's own "Unexpected [DecodeError] raised by servicer method" is gone.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_the_same_methods_still_answer_valid_bytes(channel: grpc.aio.Channel) -> None:
    health = health_pb2.HealthCheckRequest().SerializeToString()
    [answer] = await call_raw(channel, "/grpc.health.v1.Health/Check", [health])
    assert health_pb2.HealthCheckResponse.FromString(answer).status == health_pb2.HealthCheckResponse.SERVING
    # Watch writes with context.write (not a generator): its answers still arrive through the wrapper.
    watch = channel.unary_stream("/grpc.health.v1.Health/Watch", request_serializer=as_is)
    call = watch(health, timeout=5)
    first = await anext(aiter(call))
    call.cancel()
    assert health_pb2.HealthCheckResponse.FromString(first).status == health_pb2.HealthCheckResponse.SERVING


async def test_a_bad_message_mid_stream_ends_it_after_the_items_read_are_answered(
    channel: grpc.aio.Channel, emulator: ImsEmulator
) -> None:
    good = [
        StreamModerateImagesRequest(
            correlation_id=str(i), request=ModerateImageRequest(content=make_png(256, 256))
        ).SerializeToString()
        for i in range(5)
    ]
    answers: list[StreamModerateImagesResponse] = []

    async def read() -> None:
        codec = {
            "request_serializer": as_is,
            "response_deserializer": StreamModerateImagesResponse.FromString,
        }
        call = channel.stream_stream(f"{SERVICE}/StreamModerateImages", **codec)
        stream: AsyncIterator[StreamModerateImagesResponse] = call(
            iter([*good, UNDECODABLE, *good]), timeout=10
        )
        async for answer in stream:
            answers.append(answer)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read()
    assert_undecodable(caught.value)
    assert "5 messages" in rich_error(caught.value).message
    assert sorted(a.correlation_id for a in answers) == [str(i) for i in range(5)]
    assert all(a.WhichOneof("outcome") == "result" for a in answers)
    assert emulator.stats.billed == 5


async def test_a_flood_of_undecodable_calls_logs_a_line_not_a_line_each(
    gateway: Gateway, channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="service.undecodable")
    for _ in range(50):
        with pytest.raises(grpc.aio.AioRpcError):
            await call_raw(channel, f"{SERVICE}/ModerateImage", [UNDECODABLE])
    lines = [r for r in caplog.records if r.name == "service.undecodable"]
    assert 1 <= len(lines) <= 2
    assert all(r.levelno == logging.WARNING for r in lines)


def test_the_rate_limited_log_counts_what_it_left_out(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    throttled = RateLimitedLog(
        logging.getLogger("test.throttled"), "bad thing", interval=10, clock=lambda: now[0]
    )
    with caplog.at_level(logging.WARNING, logger="test.throttled"):
        for second in range(25):
            now[0] = float(second)
            throttled.record()
    assert [r.fields["count"] for r in caplog.records] == [1, 10, 10]  # type: ignore[attr-defined]
