"""A steady trickle of unary `ModerateImage` calls, as interactive callers make beside the streams."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

import grpc
from moderation.v1 import moderation_service_pb2_grpc

from bench.soak.errors import call_error_label, scan_call_error
from bench.soak.leaks import ANSWERS, SecretScan
from bench.soak.plan import Plan
from bench.soak.tally import OK, Tally
from testbed.client import request


async def run_unary(
    stub: moderation_service_pb2_grpc.ModerationServiceStub,
    plan: Plan,
    images: Sequence[bytes],
    tally: Tally,
    scan: SecretScan,
    stop: asyncio.Event,
) -> None:
    """Starts a call every 1 / `plan.unary_rate` seconds until `stop` is set, whether or not earlier
    calls have answered (callers do not wait for each other), then waits for the calls in flight."""
    loop = asyncio.get_running_loop()

    async def one(number: int) -> None:
        sent = loop.time()
        outcome = OK
        try:
            result = await stub.ModerateImage(
                request(images[number % len(images)], f"soak-unary-{number}"), timeout=plan.unary_deadline
            )
            scan.scan(ANSWERS, result.SerializeToString())
        except grpc.aio.AioRpcError as error:
            outcome = call_error_label(error)
            scan_call_error(scan, error)
        tally.record(outcome, loop.time() - sent, plan.unary_limit)

    async with asyncio.TaskGroup() as calls:
        started = loop.time()
        for number in itertools.count():
            # On a schedule rather than a sleep after each start, so the rate does not drift.
            delay = started + number / plan.unary_rate - loop.time()
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, delay))
                return
            except TimeoutError:
                calls.create_task(one(number))
