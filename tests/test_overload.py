"""Overload through a real gateway: 2,000 calls at once over one connection and over many.

Every call gets OK or a documented RESOURCE_EXHAUSTED (never UNAVAILABLE from RST_STREAM, CANCELLED or
INTERNAL), every item read gets exactly one answer, every refusal has its access line, and one
caller's flood leaves room for another caller.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections import Counter

import grpc
import pytest
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, StreamModerateImagesRequest

from emulator import ImsEmulator
from emulator.images import make_png
from tests.support.gateway import CHANNEL_OPTIONS, GatewayFactory
from tests.support.richstatus import rich_error

Stub = moderation_service_pb2_grpc.ModerationServiceStub
IMAGE = make_png(256, 256)
CALLS = 2000
ITEMS_PER_STREAM = 2
REFUSALS = {"SERVER_OVER_CAPACITY", "CALLER_OVER_CAPACITY"}
FLOOD_TOKEN = "flood-0123456789abcdef"
CANARY_TOKEN = "canary-0123456789abcdef"


def channels(port: int, count: int) -> list[grpc.aio.Channel]:
    """`count` channels, each with its own connection (no subchannel shared between them)."""
    options = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    return [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(count)]


class Tally:
    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self.answers: Counter[str] = Counter()
        self.items_sent = 0

    def refused(self, error: grpc.aio.AioRpcError) -> None:
        if error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and rich_error(error).info.reason in REFUSALS:
            self.outcomes[rich_error(error).info.reason] += 1
        else:
            self.unexpected.append(f"{error.code().name}: {error.details()}")

    async def unary(self, stub: Stub, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        try:
            await stub.ModerateImage(ModerateImageRequest(content=IMAGE), timeout=60, metadata=metadata)
            self.outcomes["OK"] += 1
        except grpc.aio.AioRpcError as error:
            self.refused(error)

    async def stream(self, stub: Stub, name: str) -> None:
        requests = [
            StreamModerateImagesRequest(
                correlation_id=f"{name}/{i}", request=ModerateImageRequest(content=IMAGE)
            )
            for i in range(ITEMS_PER_STREAM)
        ]
        answered: list[str] = []
        try:
            async for answer in stub.StreamModerateImages(iter(requests), timeout=60):
                assert answer.WhichOneof("outcome") == "result", answer
                answered.append(answer.correlation_id)
            self.items_sent += ITEMS_PER_STREAM
            self.outcomes["OK"] += 1
        except grpc.aio.AioRpcError as error:
            # Refused on arrival: nothing was read, so nothing is owed.
            assert not answered
            self.refused(error)
        self.answers.update(answered)


def refusals_logged(log: io.StringIO) -> Counter[str]:
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    return Counter(line["reason"] for line in lines if line["rpc.grpc.status_code"] == "RESOURCE_EXHAUSTED")


def assert_every_item_answered_once(tally: Tally) -> None:
    assert tally.items_sent == sum(tally.answers.values())
    assert set(tally.answers.values()) <= {1}


@pytest.mark.parametrize("kind", ["unary", "stream"])
async def test_2000_calls_over_one_connection_wait_in_the_client(
    make_gateway: GatewayFactory, emulator: ImsEmulator, kind: str
) -> None:
    emulator.config.latency = 0.05
    # One connection carries at most 100 calls at once, under both caps: all are answered.
    gateway = await make_gateway(qps=100_000)
    [channel] = channels(gateway.port, 1)
    tally = Tally()
    async with channel:
        stub = Stub(channel)
        if kind == "unary":
            await asyncio.gather(*(tally.unary(stub) for _ in range(CALLS)))
        else:
            await asyncio.gather(*(tally.stream(stub, str(i)) for i in range(CALLS)))
    assert tally.unexpected == []
    assert tally.outcomes == {"OK": CALLS}
    assert_every_item_answered_once(tally)
    assert tally.items_sent == (CALLS * ITEMS_PER_STREAM if kind == "stream" else 0)


async def test_2000_calls_over_many_connections_get_ok_or_a_logged_refusal(
    make_gateway: GatewayFactory, emulator: ImsEmulator, access_log: io.StringIO
) -> None:
    # Slow enough answers that the calls pile up past the bulkhead however busy the machine is.
    emulator.config.latency = 1.0
    gateway = await make_gateway(qps=100_000, max_concurrent_rpcs=300, caller_max_in_flight=100)
    opened = channels(gateway.port, 40)
    tally = Tally()
    try:
        stubs = [Stub(channel) for channel in opened]
        await asyncio.gather(
            *(
                tally.unary(stubs[i % len(stubs)]) if i % 2 else tally.stream(stubs[i % len(stubs)], str(i))
                for i in range(CALLS)
            )
        )
    finally:
        for channel in opened:
            await channel.close()
    assert tally.unexpected == []
    assert sum(tally.outcomes.values()) == CALLS
    # All calls come from 127.0.0.1 (authentication is off): its bulkhead is the tighter cap.
    assert tally.outcomes["CALLER_OVER_CAPACITY"] > 0
    assert tally.outcomes["OK"] > 0
    assert_every_item_answered_once(tally)
    assert refusals_logged(access_log) == Counter({r: n for r, n in tally.outcomes.items() if r in REFUSALS})


async def test_a_canary_is_answered_while_another_caller_floods(
    make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    emulator.config.latency = 0.2
    # The emulator shares this process's CPU with the gateway: a bulkhead of 50 leaves room for both.
    gateway = await make_gateway(
        qps=100_000, caller_max_in_flight=50, auth_tokens={FLOOD_TOKEN: "flood", CANARY_TOKEN: "canary"}
    )
    flood = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.flood",
        str(gateway.port),
        str(CALLS),
        "20",
        FLOOD_TOKEN,
        stdout=asyncio.subprocess.PIPE,
    )
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    async with channels(gateway.port, 1)[0] as channel:
        # Through the flood and a little past it: at least five calls, the first while it is at its worst.
        while (flood.returncode is None and len(latencies) < 50) or len(latencies) < 5:
            started = loop.time()
            await Stub(channel).ModerateImage(
                ModerateImageRequest(content=IMAGE),
                timeout=5,
                metadata=(("authorization", f"Bearer {CANARY_TOKEN}"),),
            )
            latencies.append(loop.time() - started)
            await asyncio.sleep(0.1)
    stdout, _ = await flood.communicate()
    outcomes = json.loads(stdout)
    assert set(outcomes) <= {"OK", "RESOURCE_EXHAUSTED:CALLER_OVER_CAPACITY"}, outcomes
    assert outcomes["RESOURCE_EXHAUSTED:CALLER_OVER_CAPACITY"] > 0
    assert sum(outcomes.values()) == CALLS
    assert max(latencies) < 5


async def test_streams_cancelled_while_waiting_give_their_slots_back(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(max_in_flight=2, caller_max_in_flight=2)
    [channel] = channels(gateway.port, 1)
    async with channel:
        stub = Stub(channel)
        for _ in range(5):
            # The gateway holds a slot while it waits for this stream's first item, then is cancelled.
            call = stub.StreamModerateImages()
            await asyncio.sleep(0.05)
            call.cancel()
        await asyncio.sleep(0.2)
        items = [StreamModerateImagesRequest(request=ModerateImageRequest(content=IMAGE)) for _ in range(3)]
        answers = [a async for a in stub.StreamModerateImages(iter(items), timeout=10)]
    assert len(answers) == 3
