"""The fleet's counts in Redis: one atomic script per reservation (one round trip per billed call).

Keys are hashes (`moderation:quota:<sha256>`), never a caller's name or token; each counter expires a
little after its period ends. Any exception or a reply of the wrong shape is `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as redis

from common.cancellation import end_if_cancelled
from service.quotas.store import Counter, Reservation, StoreUnavailable

__all__ = ["RedisStore"]

# KEYS: the counters; ARGV: per counter, its limit, 1 if hard, its ttl. All or nothing: a hard counter
# at its limit refuses before anything is incremented. Replies {1, count...} or {0, index, count}.
_RESERVE = """
for i = 1, #KEYS do
  if ARGV[3 * i - 1] == '1' then
    local used = tonumber(redis.call('GET', KEYS[i]) or '0')
    if used + 1 > tonumber(ARGV[3 * i - 2]) then return {0, i - 1, used} end
  end
end
local reply = {1}
for i = 1, #KEYS do
  local count = redis.call('INCR', KEYS[i])
  if count == 1 then redis.call('EXPIRE', KEYS[i], ARGV[3 * i]) end
  reply[#reply + 1] = count
end
return reply
"""
_RELEASE = """
for i = 1, #KEYS do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then redis.call('DECR', KEYS[i]) end
end
return 1
"""
# ARGV: per key, the count to add and the ttl of a key it creates.
_ADD = """
for i = 1, #KEYS do
  redis.call('INCRBY', KEYS[i], ARGV[2 * i - 1])
  if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ARGV[2 * i]) end
end
return 1
"""


class RedisStore:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        # The client's pool refuses a command past its connections (MaxConnectionsError) rather than
        # queue it: a burst of attempts waits here for a connection instead of finding Redis "away".
        self._connections = asyncio.Semaphore(client.connection_pool.max_connections)
        self._reserve = client.register_script(_RESERVE)
        self._release = client.register_script(_RELEASE)
        self._add = client.register_script(_ADD)

    async def reserve(self, counters: Sequence[Counter]) -> Reservation:
        args = [value for c in counters for value in (c.limit, int(c.hard), c.ttl)]
        reply = await self._run(self._reserve, [c.key for c in counters], args)
        if not isinstance(reply, list) or not reply or not all(isinstance(n, int) for n in reply):
            raise StoreUnavailable("odd reply to a reservation")
        if reply[0] == 1 and len(reply) == len(counters) + 1:
            return Reservation(True, tuple(reply[1:]))
        if reply[0] == 0 and len(reply) == 3 and 0 <= reply[1] < len(counters):
            return Reservation(False, (reply[2],), reply[1])
        raise StoreUnavailable("odd reply to a reservation")

    async def release(self, keys: Sequence[str]) -> None:
        await self._run(self._release, list(keys), [])

    async def read(self, keys: Sequence[str]) -> list[int]:
        values = await self._run(lambda keys, args: self._client.mget(keys), list(keys), [])
        if not isinstance(values, list):
            raise StoreUnavailable("odd reply to a read")
        try:
            return [int(v or 0) for v in values]
        except (TypeError, ValueError):
            raise StoreUnavailable("odd reply to a read") from None

    async def add(self, counts: Mapping[str, tuple[int, int]]) -> None:
        await self._run(self._add, list(counts), [value for pair in counts.values() for value in pair])

    async def _run(self, command: Any, keys: list[str], args: list[int]) -> object:
        try:
            async with self._connections:
                return await command(keys=keys, args=args)
        except Exception as exc:
            end_if_cancelled()
            # Whatever Redis or the connection did, the gateway's answer is the same: the store is away.
            raise StoreUnavailable(type(exc).__name__) from None

    async def aclose(self) -> None:
        try:
            await self._client.aclose()
        except Exception:  # closing a client of an unreachable Redis: nothing left to do
            return
