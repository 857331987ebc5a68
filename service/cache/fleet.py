"""The fleet's store in Redis: verdicts, and short leases so that one replica calls IMS per key.

Three Lua scripts, one round trip each: `claim` returns the verdict if there is one, else takes the
key's lease if nobody holds it; `publish` stores a verdict and drops the lease; `release` drops the
lease only. A lease expires by itself (its holder's deadline and a little more), so a replica that
dies holding one delays the others by at most their own "time runs short" wait.

Values are the verdict's proto bytes (no image bytes, no secrets); keys are hashes. Every call has a
timeout the caller derives from its deadline; a failed or slow call makes the store `unavailable` for
`RETRY_AFTER`, during which every call fails at once, so callers bypass it without waiting.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

__all__ = ["RETRY_AFTER", "Claimed", "FleetStore", "Held", "Hit", "StoreUnavailable"]

log = logging.getLogger(__name__)

VERDICT_PREFIX = "moderation:cache:verdict:"
LEASE_PREFIX = "moderation:cache:lease:"
# After a failure, the store is left alone this long (calls go to the backend meanwhile).
RETRY_AFTER = 1.0

_CLAIM = """
local value = redis.call('GET', KEYS[1])
if value then return {1, value, redis.call('PTTL', KEYS[1])} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {0}
"""
_PUBLISH = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class StoreUnavailable(Exception):
    """Redis did not answer in time, or refused: bypass the store."""


@dataclass(frozen=True)
class Hit:
    value: bytes
    # Seconds the verdict has left in Redis.
    ttl: float


@dataclass(frozen=True)
class Claimed:
    """This caller holds the key's lease: it calls the backend, then publishes or releases."""

    owner: str


class Held:
    """Another caller holds the lease: wait for its verdict."""


HELD = Held()


class FleetStore:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._claim = client.register_script(_CLAIM)
        self._publish = client.register_script(_PUBLISH)
        self._release = client.register_script(_RELEASE)
        self._owners = (f"{os.getpid()}-{secrets.token_hex(4)}-{n}" for n in itertools.count())
        self._down_until = 0.0

    @property
    def available(self) -> bool:
        return asyncio.get_running_loop().time() >= self._down_until

    async def claim(self, key: str, lease: float, *, timeout: float) -> Hit | Claimed | Held:
        owner = next(self._owners)
        reply = await self._call(
            self._claim, [VERDICT_PREFIX + key, LEASE_PREFIX + key], [owner, _ms(lease)], timeout
        )
        if reply[0] == 1:
            return Hit(bytes(reply[1]), max(0.0, int(reply[2]) / 1000))
        return Claimed(owner) if reply[0] == 2 else HELD

    async def publish(self, key: str, value: bytes, ttl: float, owner: str | None, *, timeout: float) -> None:
        keys = [VERDICT_PREFIX + key, LEASE_PREFIX + key]
        await self._call(self._publish, keys, [value, _ms(ttl), owner or ""], timeout)

    async def release(self, key: str, owner: str, *, timeout: float) -> None:
        await self._call(self._release, [LEASE_PREFIX + key], [owner], timeout)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(
        self, script: AsyncScript, keys: list[str], args: list[str | bytes | int], timeout: float
    ) -> list[Any]:
        loop = asyncio.get_running_loop()
        if loop.time() < self._down_until or timeout <= 0:
            raise StoreUnavailable
        try:
            async with asyncio.timeout(timeout):
                reply = await script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as error:
            self._went_down(loop.time(), error)
            raise StoreUnavailable from None
        if self._down_until:
            self._down_until = 0.0
            log.warning("verdict cache: Redis answers again; the fleet's verdicts are shared again")
        return reply if isinstance(reply, list) else [reply]

    def _went_down(self, now: float, error: BaseException) -> None:
        if not self._down_until:
            # The error's class only: its text may quote the URL, which may hold the password.
            log.warning(
                "verdict cache: Redis unreachable or slow (%s); calls go to the backend uncached",
                "timeout" if isinstance(error, TimeoutError) else "connection or command failed",
            )
        self._down_until = now + RETRY_AFTER


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
