"""Quotas through real processes: gateway replicas on one real redis-server, the emulator as IMS, real
gRPC callers. Exactly the quota's billed calls reach IMS whatever the fleet's concurrency, the rest are
refused with QuotaFailure, other callers are unaffected, the day rolls over on the gateways' injected
clock, and a Redis outage does what each mode says."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest
import redis as redis_sync
from moderation.v1.moderation_service_pb2 import GetUsageRequest, QuotaUsage

from emulator import EmulatorConfig, ImsEmulator
from emulator.images import make_png
from testbed.client import open_channel, stub
from testbed.redis_server import RedisServer
from testbed.stream import StreamResult, run_stream
from tests.support.eventually import eventually
from tests.support.gateway import SECRET_ID, SECRET_KEY
from tests.support.quota_replicas import TOKENS, bearer, moderate, replicas, set_clock, write_config
from tests.support.richstatus import rich_error

SHANGHAI = ZoneInfo("Asia/Shanghai")
QUOTA_REFUSED = "RESOURCE_EXHAUSTED/CALLER_QUOTA_EXHAUSTED"


@pytest.fixture
def fast_emulator() -> Iterator[ImsEmulator]:
    """IMS at 10 ms a call and no rate limit: 2,000 items take seconds."""
    config = EmulatorConfig(secret_id=SECRET_ID, secret_key=SECRET_KEY, latency=0.01)
    with ImsEmulator(config, host="127.0.0.1", port=0) as emulator:
        yield emulator


async def stream(address: str, caller: str, images: list[bytes]) -> StreamResult:
    async with open_channel(address) as channel:
        return await run_stream(stub(channel), images, len(images), metadata=bearer(caller))


async def usage(address: str, caller: str) -> list[QuotaUsage]:
    async with open_channel(address) as channel:
        return list(
            (await stub(channel).GetUsage(GetUsageRequest(), timeout=5, metadata=bearer(caller))).usage
        )


async def polled_usage(
    address: str, caller: str, ready: Callable[[list[QuotaUsage]], bool]
) -> list[QuotaUsage]:
    """The caller's usage once an answer satisfies `ready` (asked every 0.2 s; errors ask again)."""

    async def answer() -> list[QuotaUsage] | None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            rows = await usage(address, caller)
            if ready(rows):
                return rows
        return None

    return await eventually(answer, within=20, every=0.2)


def split(items: list[bytes], parts: int) -> list[list[bytes]]:
    return [items[i::parts] for i in range(parts)]


async def test_three_replicas_spend_exactly_the_callers_500_and_refuse_the_rest(
    fast_emulator: ImsEmulator, redis: RedisServer, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path, fast_emulator, "[quotas.uploads]\nper_day = 500\n\n[quotas.others]\nper_day = 1000\n"
    )
    uploads = [make_png(64, 64, f"upload-{i}") for i in range(2000)]
    others = [make_png(64, 64, f"other-{i}") for i in range(150)]
    async with replicas(tmp_path, 3, MODERATION_REDIS_URL=redis.url, **config) as addresses:
        fast_emulator.reset_stats()
        results = await asyncio.gather(
            *(stream(a, "uploads", part) for a, part in zip(addresses, split(uploads, 3), strict=True)),
            *(stream(a, "others", part) for a, part in zip(addresses, split(others, 3), strict=True)),
        )
        refused = await moderate(addresses[0], "uploads")
        uploads_usage, others_usage = (
            await usage(addresses[1], "uploads"),
            await usage(addresses[2], "others"),
        )
    spent, served = results[:3], results[3:]
    # Exactly the quota reached IMS, counted at IMS: 500 of the caller's and every one of the other's.
    assert fast_emulator.stats.billed == 500 + 150
    assert sum(r.results for r in spent) == 500
    assert sum(r.errors[QUOTA_REFUSED] for r in spent) == 1500
    assert all(r.answered == r.sent and r.call_error is None for r in results)
    assert sum(r.results for r in served) == 150
    assert not any(r.errors for r in served)
    assert refused is not None
    error = rich_error(refused)
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.info.reason == "CALLER_QUOTA_EXHAUSTED"
    assert error.quota_failure is not None
    [violation] = error.quota_failure.violations
    assert (violation.subject, violation.description) == ("quota:per_day", "500 billed calls a day")
    assert error.retry_info is not None
    assert 0 < error.retry_info.retry_delay.ToTimedelta().total_seconds() <= 86_400
    # Each caller sees its own usage only.
    assert [(u.quota, u.used, u.limit, u.remaining) for u in uploads_usage] == [("per_day", 500, 500, 0)]
    assert [(u.quota, u.used, u.limit, u.remaining) for u in others_usage] == [("per_day", 150, 1000, 850)]


async def test_the_day_rolls_over_on_the_gateways_clock_and_keys_are_hashed_and_expire(
    fast_emulator: ImsEmulator, redis: RedisServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path, fast_emulator, "[quotas.uploads]\nper_day = 3\n")
    set_clock(tmp_path, datetime(2026, 12, 6, 18, 0, tzinfo=SHANGHAI))
    async with replicas(tmp_path, 2, MODERATION_REDIS_URL=redis.url, **config) as (first, second):
        answers = [await moderate(address, "uploads") for address in (first, second, first, second)]
        assert answers[:3] == [None, None, None]
        refused = answers[3]
        assert refused is not None
        retry = rich_error(refused).retry_info
        assert retry is not None
        # Six hours to Shanghai's midnight.
        assert retry.retry_delay.ToTimedelta().total_seconds() == pytest.approx(6 * 3600, abs=60)
        set_clock(tmp_path, datetime(2026, 12, 7, 0, 0, 5, tzinfo=SHANGHAI))
        assert await moderate(second, "uploads") is None
        [today] = await usage(first, "uploads")
    assert today.period_start.ToDatetime(SHANGHAI) == datetime(2026, 12, 7, tzinfo=SHANGHAI)
    assert (today.used, today.remaining) == (1, 2)
    assert fast_emulator.stats.billed == 4
    with redis_sync.Redis.from_url(redis.url) as client:
        keys = [key.decode() for key in client.keys("moderation:quota:*")]
        # One counter a day, named by a hash: no caller's name (nor anything of its token) in Redis.
        assert len(keys) == 2
        assert not any(
            key for key in client.keys("*") if b"uploads" in key or TOKENS["uploads"].encode() in key
        )
        # Each counter expires an hour after its period's end (by the gateway's clock, a day after the first).
        assert all(0 < client.ttl(key) <= 25 * 3600 for key in keys)


async def outage(
    redis: RedisServer, folder: Path, config: dict[str, str], mode: str
) -> tuple[list[grpc.aio.AioRpcError | None], int, str]:
    """uploads (3 a day) calls once, then four times with Redis stopped, then asks its usage until Redis
    (restarted, empty) answers again; `others` (no quota) calls during the outage. Returns the calls'
    errors, the usage read once Redis answered again, and the replica's log."""
    settings = {**config, "MODERATION_REDIS_URL": redis.url, "MODERATION_QUOTA_REDIS_FAILURE": mode}
    async with replicas(folder, 1, **settings) as (address,):
        calls = [await moderate(address, "uploads")]
        redis.stop()
        calls += [await moderate(address, "uploads") for _ in range(4)]
        calls.append(await moderate(address, "others"))
        redis.start()
        [after] = await polled_usage(address, "uploads", lambda rows: True)
        calls.append(await moderate(address, "uploads"))
    return calls, after.used, (folder / "replica0.log").read_text(encoding="utf-8")


async def test_fail_closed_refuses_governed_calls_while_redis_is_down(
    fast_emulator: ImsEmulator, redis: RedisServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path, fast_emulator, "[quotas.uploads]\nper_day = 3\n")
    calls, used, log = await outage(redis, tmp_path, config, "fail-closed")
    assert calls[0] is None
    for refused in calls[1:5]:
        assert refused is not None
        error = rich_error(refused)
        assert (error.code, error.info.reason) == (grpc.StatusCode.UNAVAILABLE, "QUOTA_STORE_UNAVAILABLE")
    # A caller no quota governs is served; and once Redis is back (empty), uploads is counted afresh.
    assert calls[5] is None
    assert used == 0
    assert calls[6] is None
    assert fast_emulator.stats.billed == 3
    assert log.count("quota store (Redis) unreachable") == 1
    assert log.count("quota store (Redis) reachable again") == 1


async def test_fail_open_serves_counts_here_and_adds_the_counts_once_redis_is_back(
    fast_emulator: ImsEmulator, redis: RedisServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path, fast_emulator, "[quotas.uploads]\nper_day = 3\n")
    calls, used, log = await outage(redis, tmp_path, config, "fail-open")
    # Served through the outage, past the limit; Redis restarted empty got the four counted meanwhile
    # (the usage read said 4), so the next call is refused.
    assert calls[:6] == [None] * 6
    refused = calls[6]
    assert refused is not None
    assert used == 4
    assert rich_error(refused).info.reason == "CALLER_QUOTA_EXHAUSTED"
    assert fast_emulator.stats.billed == 6
    assert log.count("quota store (Redis) unreachable") == 1
    assert log.count("quota store (Redis) reachable again") == 1


async def test_without_redis_a_replica_counts_alone_and_follows_the_routing_file(
    fast_emulator: ImsEmulator, tmp_path: Path
) -> None:
    config = write_config(tmp_path, fast_emulator, "[quotas.uploads]\nper_day = 2\n")
    async with replicas(tmp_path, 1, **config) as (address,):
        assert [await moderate(address, "uploads") for _ in range(2)] == [None, None]
        assert await moderate(address, "uploads") is not None
        # The file changes while the gateway runs: the new limit applies within a few seconds.
        write_config(tmp_path, fast_emulator, "[quotas.uploads]\nper_day = 5\n")
        await polled_usage(address, "uploads", lambda rows: rows[0].limit == 5)
        assert await moderate(address, "uploads") is None
        [row] = await usage(address, "uploads")
        assert (row.used, row.limit, row.remaining) == (3, 5, 2)
        # A caller without quotas has none to see; a call without a token sees nothing at all.
        assert await usage(address, "others") == []
        async with open_channel(address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub(channel).GetUsage(GetUsageRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert fast_emulator.stats.billed == 3
    assert "quotas reloaded" in (tmp_path / "replica0.log").read_text(encoding="utf-8")
