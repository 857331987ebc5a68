"""The async client library against the real gateway on loopback and the IMS emulator behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, Suggestion
from moderation_client import ModerationClient, ModerationError, StreamItem, StreamResult

from emulator import Faults, ImsEmulator
from emulator.images import make_png
from service.server import Gateway
from tests.support.client_gateways import PASS, address, draining_pair
from tests.support.gateway import GatewayFactory

BLOCK = make_png(256, 256, marker="IMSEMU:Block:Porn:SexBehavior:97")
TINY = b"far too small"
TOKEN = "client-test-0123456789abcdef"


def request(content: bytes = PASS) -> ModerateImageRequest:
    return ModerateImageRequest(content=content)


async def failure(client: ModerationClient, content: bytes = PASS) -> ModerationError:
    with pytest.raises(ModerationError) as caught:
        await client.moderate(request(content))
    return caught.value


async def test_a_unary_call_returns_the_result(gateway: Gateway, emulator: ImsEmulator) -> None:
    async with ModerationClient(address(gateway)) as client:
        result = await client.moderate(request(BLOCK))
    assert (result.suggestion, result.label, result.backend) == (
        Suggestion.SUGGESTION_BLOCK,
        "Porn",
        "tencent",
    )
    assert emulator.stats.billed == 1


async def test_an_error_carries_the_rich_status(gateway: Gateway, emulator: ImsEmulator) -> None:
    async with ModerationClient(address(gateway)) as client:
        error = await failure(client, TINY)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert (error.domain, error.reason) == ("moderation-gateway", "IMAGE_TOO_SMALL")
    assert error.metadata["field"] == "content"
    assert error.retry_delay is None
    assert not error.retryable
    assert error.status is not None
    assert [d.Is(error_details_pb2.BadRequest.DESCRIPTOR) for d in error.status.details].count(True) == 1
    assert "IMAGE_TOO_SMALL" in str(error)
    assert emulator.stats.requests == 0


async def test_a_status_made_by_grpc_itself_has_no_reason(gateway: Gateway) -> None:
    # Within this client's send limit, over the gateway's receive limit: gRPC refuses it there.
    async with ModerationClient(address(gateway)) as client:
        error = await failure(client, b"\0" * (20 * 1024 * 1024))
    assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (error.reason, error.status, dict(error.metadata)) == (None, None, {})


async def test_rate_budget_exhausted_is_retried_after_the_retry_info_delay(
    make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    gateway = await make_gateway(qps=1)
    governor = gateway.router.upstreams["tencent"].governor
    loop = asyncio.get_running_loop()
    # Each attempt may wait 0.3 s for a rate slot; the next one comes ~1 s after the first call's.
    async with ModerationClient(address(gateway), timeout=5, attempt_timeout=0.3) as client:
        await client.moderate(request())
        started = loop.time()
        result = await client.moderate(request())
        elapsed = loop.time() - started
    assert result.suggestion == Suggestion.SUGGESTION_PASS
    # One refusal: the retry waited as RetryInfo said, instead of being refused again and again.
    assert governor.rejections == 1
    assert 0.6 < elapsed < 1.6
    assert emulator.stats.billed == 2


async def test_no_retry_when_retry_info_asks_for_more_than_the_time_left(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway(qps=1)
    loop = asyncio.get_running_loop()
    async with ModerationClient(address(gateway), timeout=0.5) as client:
        await client.moderate(request())
        started = loop.time()
        error = await failure(client)
        elapsed = loop.time() - started
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_BUDGET_EXHAUSTED")
    assert error.retryable
    assert error.retry_delay is not None
    assert error.retry_delay > 0.5
    assert elapsed < 0.3  # raised at once, not after sleeping toward the deadline
    assert gateway.router.upstreams["tencent"].governor.rejections == 1


GATEWAY_RETRIED = {"model_call_failed": "BACKEND_UNAVAILABLE", "rate_limit_burst": "BACKEND_RATE_LIMITED"}


@pytest.mark.parametrize("fault", sorted(GATEWAY_RETRIED))
async def test_what_the_gateway_already_retried_is_not_retried_again(
    gateway: Gateway, emulator: ImsEmulator, fault: str
) -> None:
    emulator.config.faults = Faults(fail_next=[fault] * 6)
    async with ModerationClient(address(gateway)) as client:
        error = await failure(client)
    assert (error.reason, error.metadata["attempts"]) == (GATEWAY_RETRIED[fault], "3")
    assert error.retry_delay is not None  # the gateway says waiting helps; the client still must not
    assert not error.retryable
    assert emulator.stats.requests == 3  # the gateway's three billed attempts, and no more


async def test_the_bearer_token_is_sent(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(auth_tokens={TOKEN: "checkout"})
    async with ModerationClient(address(gateway), token=TOKEN) as client:
        assert (await client.moderate(request())).suggestion == Suggestion.SUGGESTION_PASS
        assert TOKEN not in repr(client)
    async with ModerationClient(address(gateway)) as anonymous:
        error = await failure(anonymous)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "CALLER_UNAUTHENTICATED")


async def test_a_stream_yields_every_item_once_with_the_callers_ids(
    gateway: Gateway, emulator: ImsEmulator
) -> None:
    async def items() -> AsyncIterator[StreamItem]:
        for i in range(30):
            yield f"photo-{i}", request(TINY if i % 10 == 3 else PASS)

    async with ModerationClient(address(gateway)) as client:
        answers = [answer async for answer in client.moderate_stream(items())]
    assert sorted(answer.index for answer in answers) == list(range(30))
    for answer in answers:
        assert answer.correlation_id == f"photo-{answer.index}"
        if answer.index % 10 == 3:
            assert answer.result is None
            assert answer.error is not None
            assert answer.error.reason == "IMAGE_TOO_SMALL"
        else:
            assert answer.error is None
            assert answer.result is not None
            assert answer.result.suggestion == Suggestion.SUGGESTION_PASS
    assert emulator.stats.billed == 27


async def test_plain_requests_are_named_by_their_index(gateway: Gateway) -> None:
    async with ModerationClient(address(gateway)) as client:
        answers = [answer async for answer in client.moderate_stream([request(), request(BLOCK)])]
    assert sorted((a.index, a.correlation_id) for a in answers) == [(0, "0"), (1, "1")]


async def test_a_failing_input_is_raised_after_the_answers_to_what_was_sent(gateway: Gateway) -> None:
    async def items() -> AsyncIterator[StreamItem]:
        for _ in range(3):
            yield request()
        raise OSError("disk gone")

    answers: list[StreamResult] = []

    async def collect(client: ModerationClient) -> None:
        async for answer in client.moderate_stream(items()):
            answers.append(answer)

    async with ModerationClient(address(gateway)) as client:
        with pytest.raises(OSError, match="disk gone"):
            await collect(client)
    assert sorted(answer.index for answer in answers) == [0, 1, 2]


async def test_a_stream_cut_by_a_shutdown_is_resent_to_the_next_server(
    make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    first, second = await draining_pair(make_gateway, emulator)
    stopping: list[asyncio.Task[None]] = []
    answers: list[StreamResult] = []

    async def items() -> AsyncIterator[StreamItem]:
        for i in range(200):
            yield f"photo-{i}", request()

    async with ModerationClient(address(first, second)) as client:
        async for answer in client.moderate_stream(items()):
            answers.append(answer)
            if len(answers) == 40:
                stopping.append(asyncio.create_task(first.stop()))
    await stopping[0]
    assert sorted(answer.index for answer in answers) == list(range(200))
    assert all(answer.correlation_id == f"photo-{answer.index}" for answer in answers)
    assert all(answer.error is None for answer in answers)
    grants = [gateway.router.upstreams["tencent"].governor.grants for gateway in (first, second)]
    assert all(grants), grants  # both served part of it
    assert emulator.stats.billed == sum(grants) == 200  # no item was moderated twice
