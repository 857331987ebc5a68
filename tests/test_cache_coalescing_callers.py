"""Coalescing shares only failures about the image itself: a caller's refusal about its own fields never
reaches another caller of the same image at the same moment (a real gateway process, the emulator)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse, User

from emulator import ImsEmulator
from emulator.faults import Faults
from emulator.images import make_png
from testbed.client import open_channel, stub
from testbed.processes import free_port
from tests.support.eventually import eventually
from tests.support.richstatus import rich_error
from tests.support.service_process import start_service, stop_gateway, wait_serving
from tests.support.tencent_routes import tencent_routes

IMAGE = make_png(256, 256, "IMSEMU:Review:Terror:Knife:93")
LATENCY = 0.5
ALICE, BOB = User(user_id="alice", account_type="5"), User(user_id="bob", account_type="6")


async def moderate(channel: grpc.aio.Channel, user: User) -> ModerateImageResponse:
    answer: ModerateImageResponse = await stub(channel).ModerateImage(
        ModerateImageRequest(content=IMAGE, user=user), timeout=10
    )
    return answer


@contextlib.asynccontextmanager
async def caching_user_fields(emulator: ImsEmulator, tmp_path: Path) -> AsyncIterator[grpc.aio.Channel]:
    """A gateway whose route caches (and so coalesces) requests with user fields."""
    routes = tmp_path / "routes.toml"
    routes.write_text(tencent_routes("cloud", emulator.url, "cache_user_fields = true"))
    port = free_port()
    process = start_service(emulator, port, MODERATION_ROUTES=str(routes), MODERATION_CACHE="memory")
    try:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            await wait_serving(channel)
            yield channel
    finally:
        await stop_gateway(process)


async def test_an_invalid_user_field_is_refused_only_to_its_caller(
    emulator: ImsEmulator, tmp_path: Path
) -> None:
    emulator.config.latency = LATENCY
    async with caching_user_fields(emulator, tmp_path) as channel:
        invalid = User(user_id="alice", account_type="9")
        refused, answer = await asyncio.gather(
            moderate(channel, invalid), moderate(channel, BOB), return_exceptions=True
        )
    assert isinstance(answer, ModerateImageResponse)
    assert isinstance(refused, grpc.aio.AioRpcError)
    error = rich_error(refused)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.bad_request is not None
    assert [v.field for v in error.bad_request.field_violations] == ["user.account_type"]
    assert answer.label == "Terror"
    assert emulator.stats.billed == 1


async def test_a_refusal_of_the_first_callers_own_fields_is_not_shared(
    emulator: ImsEmulator, tmp_path: Path
) -> None:
    # IMS refuses the first request for a parameter (not the image): as it might alice's user fields.
    emulator.config.latency = LATENCY
    emulator.config.faults = Faults(fail_next=["InvalidParameterValue"])
    async with caching_user_fields(emulator, tmp_path) as channel:
        alice = asyncio.ensure_future(moderate(channel, ALICE))
        # In moderation: the emulator counts a request billed as it starts.
        await eventually(lambda: emulator.stats.billed == 1, within=3)
        # Bob joins alice's call in flight, then calls for himself when it fails.
        answer = await moderate(channel, BOB)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await alice
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (answer.label, answer.cached) == ("Terror", False)
    assert answer.request_id != rich_error(refused.value).info.metadata.get("request_id", "")
    assert emulator.stats.billed == 2


async def test_a_refusal_of_the_image_is_shared(emulator: ImsEmulator, tmp_path: Path) -> None:
    emulator.config.latency = LATENCY
    emulator.config.faults = Faults(fail_next=["InvalidParameter.ImageSizeTooSmall"])
    async with caching_user_fields(emulator, tmp_path) as channel:
        alice = asyncio.ensure_future(moderate(channel, ALICE))
        # In moderation: the emulator counts a request billed as it starts.
        await eventually(lambda: emulator.stats.billed == 1, within=3)
        refusals = await asyncio.gather(alice, moderate(channel, BOB), return_exceptions=True)
    assert all(isinstance(r, grpc.aio.AioRpcError) for r in refusals)
    assert {r.code() for r in refusals if isinstance(r, grpc.aio.AioRpcError)} == {
        grpc.StatusCode.INVALID_ARGUMENT
    }
    assert emulator.stats.billed == 1
