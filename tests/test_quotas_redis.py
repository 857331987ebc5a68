"""The quota store's scripts on a real redis-server: all or nothing, exact under concurrency, counters
that expire, and every failure or odd state of Redis reported as unavailable (never raised as is)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis as redis_sync

from service.governor import FleetConnection
from service.quotas.redis_store import RedisStore
from service.quotas.store import Counter, StoreUnavailable
from testbed.redis_server import RedisServer

DAY, MONTH = "moderation:quota:test-day", "moderation:quota:test-month"


@pytest.fixture
async def store(redis: RedisServer) -> AsyncIterator[RedisStore]:
    made = RedisStore(FleetConnection(redis.url, password=None, ca_file=None).client())
    yield made
    await made.aclose()


async def test_a_reservation_is_all_or_nothing_and_its_counters_expire(
    store: RedisStore, redis: RedisServer
) -> None:
    counters = [Counter(DAY, 10, True, 3600), Counter(MONTH, 2, True, 86_400)]
    assert (await store.reserve(counters)).counts == (1, 1)
    assert (await store.reserve(counters)).counts == (2, 2)
    refused = await store.reserve(counters)
    assert (refused.granted, refused.refused, refused.counts) == (False, 1, (2,))
    assert await store.read([DAY, MONTH]) == [2, 2]
    with redis_sync.Redis.from_url(redis.url) as client:
        assert 3590 < client.ttl(DAY) <= 3600
        assert 86_390 < client.ttl(MONTH) <= 86_400
    # A soft counter counts past its limit.
    assert (await store.reserve([Counter(MONTH, 2, False, 86_400)])).counts == (3,)
    await store.release([DAY, DAY, DAY, DAY])
    assert await store.read([DAY]) == [0]
    await store.add({DAY: (5, 60), "moderation:quota:new": (2, 60)})
    assert await store.read([DAY, "moderation:quota:new"]) == [5, 2]
    with redis_sync.Redis.from_url(redis.url) as client:
        assert 0 < client.ttl("moderation:quota:new") <= 60


async def test_concurrent_reservations_grant_exactly_the_limit(store: RedisStore) -> None:
    counter = [Counter(DAY, 100, True, 3600)]
    reservations = await asyncio.gather(*(store.reserve(counter) for _ in range(300)))
    assert sum(r.granted for r in reservations) == 100
    assert sorted(r.counts[0] for r in reservations if r.granted) == list(range(1, 101))


async def test_a_counter_of_the_wrong_type_or_a_redis_gone_is_unavailable(
    store: RedisStore, redis: RedisServer
) -> None:
    with redis_sync.Redis.from_url(redis.url) as client:
        client.rpush(DAY, "not a count")
        client.set(MONTH, "not a number")
    for run in (
        store.reserve([Counter(DAY, 1, True, 60)]),
        store.reserve([Counter(MONTH, 1, True, 60)]),
        store.release([DAY]),
        store.read([MONTH]),
        store.add({DAY: (1, 60)}),
    ):
        with pytest.raises(StoreUnavailable):
            await run
    redis.stop()
    with pytest.raises(StoreUnavailable):
        await store.reserve([Counter("moderation:quota:other", 1, True, 60)])
