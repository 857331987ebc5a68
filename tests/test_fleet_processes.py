"""Several real gateway processes share one budget through a real redis-server, against the emulator's
strict sliding-second limit with 0-20 ms of varying arrival delay: never over the budget as IMS sees it,
nothing lost and nothing answered twice, through the faults of fleet mode."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from emulator import EmulatorConfig, ImsEmulator
from emulator.images import make_png
from testbed.client import open_channel, stub
from testbed.delay_proxy import delay_proxy
from testbed.processes import free_port
from testbed.redis_server import RedisServer
from testbed.stream import StreamResult, run_stream
from tests.support.budget import within_the_learning_allowance
from tests.support.eventually import eventually
from tests.support.gateway import SECRET_ID, SECRET_KEY
from tests.support.service_process import start_service, stop_gateway, wait_serving

BUDGET = 40
ITEMS = 120
IMAGES = [make_png(64, 64)]


@pytest.fixture
def limited_emulator() -> Iterator[ImsEmulator]:
    config = EmulatorConfig(
        secret_id=SECRET_ID, secret_key=SECRET_KEY, latency=0.2, qps_limit=BUDGET, arrival_jitter=0.02
    )
    with ImsEmulator(config, host="127.0.0.1", port=0) as emulator:
        yield emulator


@contextlib.asynccontextmanager
async def replica(
    emulator: ImsEmulator, redis_url: str, **extra: str
) -> AsyncIterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    process = start_service(
        emulator,
        port,
        IMS_QPS=str(BUDGET),
        MODERATION_REDIS_URL=redis_url,
        MODERATION_LOG_FORMAT="text",
        **extra,
    )
    try:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            await wait_serving(channel)
        yield process, f"127.0.0.1:{port}"
    finally:
        await stop_gateway(process)


async def stream(address: str, items: int = ITEMS) -> StreamResult:
    async with open_channel(address) as channel:
        return await run_stream(stub(channel), IMAGES, items)


def assert_exactly_once(result: StreamResult, items: int = ITEMS) -> None:
    assert result.call_error is None
    assert not result.errors
    assert result.answered_once == items
    assert result.duplicates == 0


def never_over_the_budget(emulator: ImsEmulator) -> None:
    assert within_the_learning_allowance(emulator.stats.rate_limited, emulator.stats.requests)
    assert emulator.stats.max_in_one_second <= BUDGET


async def test_three_replicas_over_slow_links_one_killed_keep_to_one_budget(
    limited_emulator: ImsEmulator, redis: RedisServer
) -> None:
    # One replica straight to Redis, one 5 ms and one 50 ms away (each way).
    async with (
        delay_proxy(redis.port, 0.005) as slow,
        delay_proxy(redis.port, 0.05) as slower,
        replica(limited_emulator, redis.url) as (_, first),
        replica(limited_emulator, f"redis://127.0.0.1:{slow}/0") as (_, second),
        replica(limited_emulator, f"redis://127.0.0.1:{slower}/0") as (victim, third),
    ):
        limited_emulator.reset_stats()
        streams = [asyncio.create_task(stream(address)) for address in (first, second, third)]
        # Mid-stream: a second of the budget spent by the three.
        await eventually(lambda: limited_emulator.stats.billed >= BUDGET, within=30)
        victim.send_signal(signal.SIGKILL)
        survivors = await asyncio.gather(*streams[:2])
        await streams[2]
    never_over_the_budget(limited_emulator)
    for result in survivors:
        assert_exactly_once(result)
    # The killed replica's slots were times, not tokens: the survivors got the whole budget after it.
    finished = max(r.last_answer for r in survivors)
    started = min(r.started for r in survivors)
    spent = (2 * ITEMS) / (finished - started)
    assert spent >= 0.75 * BUDGET


async def test_redis_down_then_restarted_empty_answers_everything_once(
    limited_emulator: ImsEmulator, redis: RedisServer
) -> None:
    loop = asyncio.get_running_loop()
    async with (
        replica(limited_emulator, redis.url) as (first_process, first),
        replica(limited_emulator, redis.url) as (second_process, second),
    ):
        limited_emulator.reset_stats()
        streams = [asyncio.create_task(stream(address, 2 * ITEMS)) for address in (first, second)]
        await eventually(lambda: limited_emulator.stats.billed >= BUDGET, within=30)  # on the shared pace
        redis.stop()
        await asyncio.sleep(2.5)
        redis.start()
        # Back on the shared schedule within 2 s: from then on the fleet spends the budget again.
        await asyncio.sleep(2.0)
        billed, since = limited_emulator.stats.billed, loop.time()
        await asyncio.sleep(2.0)
        pace = (limited_emulator.stats.billed - billed) / (loop.time() - since)
        results = await asyncio.gather(*streams)
    for result in results:
        assert_exactly_once(result, 2 * ITEMS)
    assert limited_emulator.stats.rate_limited <= 0.01 * limited_emulator.stats.requests
    assert limited_emulator.stats.max_in_one_second <= BUDGET
    # 97.6 % is the pace; the loaded machine's late slots, dropped, cost a few percent more.
    assert pace >= 0.85 * BUDGET
    for process in (first_process, second_process):
        output = process.stdout.read() if process.stdout else ""
        assert output.count("Redis unreachable") == 1
        assert output.count("back on the fleet's schedule") == 1


# Debian's libfaketime, preloaded into the replica itself (the `faketime` wrapper would stand between
# the test and the process it must stop): its wall clock 7 s ahead, its monotonic clock (the event
# loop's) hours off, as libfaketime moves both.
SKEWED = {"LD_PRELOAD": "/usr/$LIB/faketime/libfaketime.so.1", "FAKETIME": "+7s"}


async def test_a_replica_whose_clock_is_seconds_off_keeps_to_the_one_budget(
    limited_emulator: ImsEmulator, redis: RedisServer
) -> None:
    skew = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", "import time; print(time.time())"],
        env={"PATH": os.environ["PATH"], **SKEWED},
        capture_output=True,
        text=True,
        check=True,
    )
    assert float(skew.stdout) - time.time() > 6  # the launcher really moves the replica's clock
    async with (
        replica(limited_emulator, redis.url) as (_, honest),
        replica(limited_emulator, redis.url, **SKEWED) as (_, skewed),
    ):
        limited_emulator.reset_stats()
        results = await asyncio.gather(stream(honest), stream(skewed))
    never_over_the_budget(limited_emulator)
    for result in results:
        assert_exactly_once(result)
    # One schedule by Redis's clock: the two spent the budget together, and both at the same pace.
    started = min(r.started for r in results)
    finished = max(r.last_answer for r in results)
    assert (2 * ITEMS) / (finished - started) >= 0.75 * BUDGET
    lasted = [r.last_answer - r.started for r in results]
    assert max(lasted) <= 1.25 * min(lasted)
