"""The fleet governor when Redis misbehaves while reachable (issue 23): its clock steps, or it answers
with replies that do not parse. Replicas in one process against a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import pytest

from service.deadlines import Deadline
from service.governor import FleetGovernor, Priority
from service.governor.connect import redis_client
from service.governor.fleet import fleet_parameters
from service.governor.schedule import KEY_PREFIX, Schedule
from testbed.redis_server import RedisServer
from tests.support.fleet_governors import QPS, Factory, replicas

KEY = "budget"

__all__ = ["replicas"]  # the fixture `shifted` builds on


@pytest.fixture
async def shift() -> list[float]:
    """Seconds added to every replica's clock: a step of Redis's clock, as the replicas see it."""
    return [0.0]


@pytest.fixture
async def shifted(replicas: Factory, shift: list[float]) -> Callable[[], FleetGovernor]:
    """Replicas whose clocks move by `shift`."""
    loop = asyncio.get_running_loop()
    return lambda: replicas(clock=lambda: loop.time() + shift[0])


async def grant_times(governors: list[FleetGovernor], count: int, within: float = 5.0) -> list[float]:
    """When each of `count` batch slots was granted; a THROTTLED refusal fails the test."""
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def one(index: int) -> None:
        await governors[index % len(governors)].acquire(Priority.BATCH, Deadline.for_call(within))
        times.append(loop.time())

    await asyncio.gather(*(one(i) for i in range(count)))
    return sorted(times)


async def leave_schedule_ahead(redis: RedisServer, seconds: float) -> None:
    """What a step of Redis's clock back by `seconds` leaves: the schedule and held slots that far ahead
    of its new clock."""
    client = redis_client(redis.url)
    try:
        now_s, now_us = await client.time()
        ahead = (now_s + seconds) * 1_000_000 + now_us
        base = f"{KEY_PREFIX}{{{KEY}}}"
        await client.hset(f"{base}:pace", mapping={"tat": ahead, "itat": ahead, "changed": ahead})
        async for held in client.scan_iter(match=f"{base}:held:*"):
            await client.zadd(held, {str(ahead + n): ahead + n for n in range(10)})
    finally:
        await client.aclose()


@pytest.mark.parametrize("step", [-30.0, 30.0])
async def test_a_step_of_redis_clock_costs_under_two_seconds_and_no_call(
    shifted: Callable[[], FleetGovernor],
    redis: RedisServer,
    shift: list[float],
    step: float,
    caplog: pytest.LogCaptureFixture,
) -> None:
    governors = [shifted(), shifted()]
    await grant_times(governors, QPS)
    loop = asyncio.get_running_loop()
    with caplog.at_level(logging.WARNING, logger="service.governor.fleet"):
        # Redis's clock moves by `step` against the replicas' clocks; stepped back, it leaves the
        # schedule it kept ahead of its new clock.
        shift[0] -= step
        if step < 0:
            await leave_schedule_ahead(redis, -step)
        stepped = loop.time()
        times = await grant_times(governors, 2 * QPS)
    assert not any(g.fallback for g in governors)
    # The first slot within two seconds, then the pace again (all 40 in under 2 s + 2 s of pace).
    assert times[0] - stepped < 2.0
    assert times[-1] - stepped < 2.0 + 2 * QPS / QPS * 1.2
    assert any("clock stepped" in r.getMessage() for r in caplog.records)


@contextlib.asynccontextmanager
async def misshapen_redis() -> AsyncIterator[str]:
    """A server that speaks RESP but answers every command with a one-element array: no reply the
    governor asks for has that shape."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                writer.write(b"*1\r\n:7\r\n")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"redis://127.0.0.1:{port}/0"


async def test_a_reply_that_does_not_parse_is_redis_unavailable_and_the_replica_falls_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with misshapen_redis() as url:
        client = redis_client(url)
        governor = FleetGovernor(
            Schedule(client, KEY, fleet_parameters(QPS, 0.5)),
            name="tencent",
            on_close=client.aclose,
            # It never had an answer that parsed: without a count it would grant nothing for a while.
            expected_replicas=2,
        )
        try:
            with caplog.at_level(logging.WARNING, logger="service.governor.fleet"):
                times = await grant_times([governor], 5, within=4.0)
        finally:
            await governor.aclose()
    assert len(times) == 5
    assert governor.fallback
    lines = [r.getMessage() for r in caplog.records]
    # Not a RedisError, OSError or TimeoutError: before, only those meant "unreachable".
    assert any("Redis unreachable (AttributeError)" in line for line in lines), lines
