"""The client library against a server that breaks the protocol (tests/support/hostile_moderation.py).

Whatever the server does, the library raises ModerationError and nothing else, never leaves an item
silently unanswered, and never waits longer than its own cap because the server asked it to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from moderation.v1.moderation_service_pb2 import ModerateImageRequest
from moderation_client import (
    ModerationClient,
    ModerationError,
    RetryPolicy,
    StreamResult,
    SyncModerationClient,
)

from tests.support.hostile_moderation import (
    HostileServer,
    Misbehaviour,
    hostile_server,
    hostile_server_thread,
)

IMAGES = [ModerateImageRequest(content=bytes([ord("a") + i]) * 64) for i in range(3)]


@pytest.fixture
async def hostile() -> AsyncIterator[HostileServer]:
    async with hostile_server() as server:
        yield server


@pytest.fixture
def hostile_thread() -> Iterator[HostileServer]:
    with hostile_server_thread() as server:
        yield server


async def stream(client: ModerationClient) -> tuple[list[StreamResult], ModerationError | None]:
    """What the helper yielded before it raised, and what it raised (only ever ModerationError)."""
    results: list[StreamResult] = []
    try:
        async for result in client.moderate_stream(IMAGES):
            results.append(result)
    except ModerationError as exc:
        return results, exc
    return results, None


async def test_an_honest_server_answers_every_item(hostile: HostileServer) -> None:
    async with ModerationClient(hostile.address) as client:
        results, error = await stream(client)
    assert error is None
    assert sorted(result.index for result in results) == [0, 1, 2]


@pytest.mark.parametrize(
    "misbehaviour", [Misbehaviour.ENDS_EARLY, Misbehaviour.REPEATS_AN_INDEX, Misbehaviour.UNKNOWN_INDEX]
)
async def test_a_stream_that_leaves_items_unanswered_is_an_error(
    hostile: HostileServer, misbehaviour: Misbehaviour
) -> None:
    hostile.misbehaviour = misbehaviour
    async with ModerationClient(hostile.address) as client:
        results, error = await stream(client)
    assert error is not None
    assert error.code is grpc.StatusCode.INTERNAL
    # Each item once at most, and the error says the rest went unanswered.
    assert len({result.index for result in results}) == len(results) < len(IMAGES)


async def test_an_answer_with_no_outcome_is_that_items_error(hostile: HostileServer) -> None:
    hostile.misbehaviour = Misbehaviour.NO_OUTCOME
    async with ModerationClient(hostile.address) as client:
        results, error = await stream(client)
    assert error is None
    assert [result.index for result in sorted(results, key=lambda result: result.index)] == [0, 1, 2]
    assert {result.error.code for result in results if result.error} == {grpc.StatusCode.INTERNAL}


async def test_item_statuses_with_garbage_details_are_bare_statuses(hostile: HostileServer) -> None:
    hostile.misbehaviour = Misbehaviour.GARBAGE_DETAILS
    async with ModerationClient(hostile.address) as client:
        results, error = await stream(client)
    assert error is None
    errors = [result.error for result in sorted(results, key=lambda result: result.index)]
    # Code OK and code 999 are no error codes: both UNKNOWN; details that do not decode are ignored.
    assert [error.code if error else None for error in errors] == [
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INVALID_ARGUMENT,
    ]
    assert all(error and (error.reason, error.retry_delay) == (None, None) for error in errors)


@pytest.mark.parametrize("content", [b"a-trailer-that-is-no-status", b"b-trailer-of-another-code"])
async def test_a_call_whose_trailers_do_not_decode_fails_with_its_bare_status(
    hostile: HostileServer, content: bytes
) -> None:
    hostile.misbehaviour = Misbehaviour.GARBAGE_DETAILS
    async with ModerationClient(hostile.address) as client:
        with pytest.raises(ModerationError) as caught:
            await client.moderate(ModerateImageRequest(content=content))
    assert (caught.value.code, caught.value.message) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "garbage trailers",
    )
    assert caught.value.reason is None


def test_the_blocking_client_reads_garbage_trailers_the_same_way(hostile_thread: HostileServer) -> None:
    hostile_thread.misbehaviour = Misbehaviour.GARBAGE_DETAILS
    with SyncModerationClient(hostile_thread.address) as client, pytest.raises(ModerationError) as caught:
        client.moderate(ModerateImageRequest(content=b"a-trailer-that-is-no-status"))
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("misbehaviour", [Misbehaviour.ENDS_EARLY, Misbehaviour.UNKNOWN_INDEX])
def test_the_blocking_stream_helper_reports_unanswered_items_too(
    hostile_thread: HostileServer, misbehaviour: Misbehaviour
) -> None:
    hostile_thread.misbehaviour = misbehaviour
    with SyncModerationClient(hostile_thread.address) as client, pytest.raises(ModerationError) as caught:
        list(client.moderate_stream(IMAGES))
    assert caught.value.code is grpc.StatusCode.INTERNAL


async def test_a_retry_delay_of_a_billion_seconds_is_capped(hostile: HostileServer) -> None:
    hostile.misbehaviour = Misbehaviour.DRAINS_FOREVER
    policy = RetryPolicy(max_server_delay=0.05)
    async with ModerationClient(hostile.address, retry=policy) as client:
        # Without the cap the helper would sleep for 31 years before its second stream.
        async with asyncio.timeout(20):
            results, error = await stream(client)
    assert error is None
    assert (len(results), hostile.servicer.streams) == (3, 2)


def test_the_default_cap_is_seconds_not_years() -> None:
    assert 1.0 <= RetryPolicy().max_server_delay <= 10.0


def test_the_blocking_client_reads_the_health_status(hostile_thread: HostileServer) -> None:
    with SyncModerationClient(hostile_thread.address) as client:
        assert client.health() == "SERVING"
        with pytest.raises(ModerationError) as caught:
            client.health("no.such.Service")
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
