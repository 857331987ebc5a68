"""The fleet's store in Redis: verdicts, and short leases so that one replica calls IMS per key.

Three Lua scripts, one round trip each: `claim` returns the verdict if there is one, else takes the
key's lease if nobody holds it; `publish` stores a verdict and drops the lease; `release` drops the
lease only. A lease expires by itself (its holder's deadline and a little more), so a replica that
dies holding one delays the others by at most their own "time runs short" wait.

Values are the verdict's proto bytes (no image bytes, no secrets); keys are hashes. Every call has a
timeout the caller derives from its deadline. A call that fails in any way (an error, a timeout, a
reply of a shape the scripts never give, a value that is not a verdict) makes the store `unavailable`
for `RETRY_AFTER`, during which every call fails at once, so callers bypass it without waiting. A
verdict is parsed here, before anyone keeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as redis
from google.protobuf.message import DecodeError
from moderation.v1.moderation_service_pb2 import ModerateImageResponse, Suggestion
from redis.commands.core import AsyncScript

from common.cancellation import end_if_cancelled

__all__ = ["RETRY_AFTER", "Claimed", "FleetStore", "Held", "Hit", "StoreUnavailable"]

log = logging.getLogger(__name__)
T = TypeVar("T")

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


# What a stored verdict suggests: failures and unsuggested answers are never stored.
_STORED_SUGGESTIONS = frozenset(
    {Suggestion.SUGGESTION_PASS, Suggestion.SUGGESTION_REVIEW, Suggestion.SUGGESTION_BLOCK}
)


class StoreUnavailable(Exception):
    """Redis did not answer in time, refused, or answered nonsense: bypass the store."""


class Malformed(Exception):
    """A reply or a value of a shape the store never writes or its scripts never return."""


@dataclass(frozen=True)
class Hit:
    verdict: ModerateImageResponse
    # The verdict's bytes as stored.
    value: bytes
    # Seconds the verdict has left in Redis (more than 0).
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
        keys = [VERDICT_PREFIX + key, LEASE_PREFIX + key]
        return await self._call(
            self._claim, keys, [owner, _ms(lease)], timeout, lambda reply: _claimed(reply, owner)
        )

    async def publish(self, key: str, value: bytes, ttl: float, owner: str | None, *, timeout: float) -> None:
        keys = [VERDICT_PREFIX + key, LEASE_PREFIX + key]
        await self._call(self._publish, keys, [value, _ms(ttl), owner or ""], timeout, _integer((1,)))

    async def release(self, key: str, owner: str, *, timeout: float) -> None:
        await self._call(self._release, [LEASE_PREFIX + key], [owner], timeout, _integer((0, 1)))

    async def aclose(self) -> None:
        # Shutdown goes on whatever the connection's state: a server that spoke nonsense may have left
        # the client raising.
        with contextlib.suppress(Exception):
            await self._client.aclose()

    async def _call(
        self,
        script: AsyncScript,
        keys: list[str],
        args: list[str | bytes | int],
        timeout: float,
        parse: Callable[[Any], T],
    ) -> T:
        """The script's reply, parsed; StoreUnavailable if either fails."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._down_until or timeout <= 0:
            raise StoreUnavailable
        try:
            async with asyncio.timeout(timeout):
                reply = parse(await script(keys=keys, args=args))
        # Any failure at all, not only the client's own errors: a server speaking something else than
        # RESP, or answering HELLO oddly, makes the client raise whatever its parser meets.
        except Exception as error:
            end_if_cancelled()
            self._went_down(loop.time(), error)
            raise StoreUnavailable from None
        if self._down_until:
            self._down_until = 0.0
            log.warning("verdict cache: Redis answers again; the fleet's verdicts are shared again")
        return reply

    def _went_down(self, now: float, error: BaseException) -> None:
        if not self._down_until:
            # The error's class only: its text may quote the URL, which may hold the password.
            log.warning(
                "verdict cache: Redis unreachable or slow (%s); calls go to the backend uncached",
                _failure(error),
            )
        self._down_until = now + RETRY_AFTER


def _failure(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, Malformed):
        return "a reply or value of the wrong shape"
    return "connection or command failed"


def _integer(expected: tuple[int, ...]) -> Callable[[Any], None]:
    def check(reply: Any) -> None:
        if type(reply) is not int or reply not in expected:
            raise Malformed

    return check


def _claimed(reply: object, owner: str) -> Hit | Claimed | Held:
    """The claim script's reply: `{1, value, pttl}`, `{2}` or `{0}`; Malformed for anything else."""
    if not isinstance(reply, list) or not reply or type(reply[0]) is not int:
        raise Malformed
    if reply[0] == 1 and len(reply) == 3:
        value, ttl_ms = reply[1], reply[2]
        # A verdict without a positive expiry was not written by `publish`.
        if not isinstance(value, bytes) or type(ttl_ms) is not int or ttl_ms <= 0:
            raise Malformed
        return Hit(parse_verdict(value), value, ttl_ms / 1000)
    if len(reply) == 1 and reply[0] in (0, 2):
        return Claimed(owner) if reply[0] == 2 else HELD
    raise Malformed


def parse_verdict(value: bytes) -> ModerateImageResponse:
    """A stored verdict; Malformed unless the bytes are one (a suggestion, moderated, first choice)."""
    try:
        verdict = ModerateImageResponse.FromString(value)
    except DecodeError:
        raise Malformed from None
    if verdict.suggestion not in _STORED_SUGGESTIONS or verdict.unmoderated or verdict.fallback:
        raise Malformed
    return verdict


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
