"""The verdict cache in front of the router: hits, misses, coalescing within the process and the fleet.

A request's key (`keys.cache_key`) is looked up in the in-process LRU first. On a miss, identical
requests in flight at once share one shared call (`Coalescer`); with a fleet store that call first
claims the key in Redis: a verdict there is a hit; a lease held by another replica means waiting for
its verdict (polled with a capped backoff) while this request's own call could still finish in time;
a lease taken means this replica calls the backend and publishes the verdict.

Only a first-choice verdict is stored: never a failure, an answer of a later backend of the chain
(`fallback`) or a fail-closed `unmoderated` REVIEW. Redis trouble of any kind (no answer, an error, a
reply or value that does not parse) is never an error: the request goes to the backend as if there
were no cache, and `moderation_cache_bypassed_total` counts it. What Redis holds is parsed before the
LRU keeps it, and kept no longer than this replica's own TTL for its suggestion.

Waiters share a failure only when it is about the image itself (its bytes, or its URL's): any other
failure may be about the first caller's own fields (`user`, `device`, `data_id`) or moment, so each
waiter then calls for itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse, Suggestion

from service.cache.coalesce import Coalescer
from service.cache.fleet import Claimed, FleetStore, Hit, StoreUnavailable
from service.cache.keys import Bypass, KeyPolicy, cache_key
from service.cache.memory import MemoryLru
from service.deadlines import Deadline
from service.errors import KIND_POLICIES, CallFailure
from service.image_hash import ImageHash
from service.observe import CostMetrics, Outcome
from service.routing import Route

__all__ = ["Lookup", "Ttls", "VerdictCache"]

log = logging.getLogger(__name__)

# A Redis call waits at most this long, and at most this share of the call's time left.
REDIS_TIMEOUT = 0.25
REDIS_TIMEOUT_SHARE = 0.1
# Polling for another replica's verdict: from the first delay, doubling, capped (IMS takes ~0.8 s,
# so a waiter answers at most ~POLL_MAX after the verdict lands, in a handful of round trips).
POLL_FIRST = 0.01
POLL_MAX = 0.1
# A lease outlives its holder's deadline by this much, then expires by itself.
LEASE_MARGIN = 0.5
# The request fields a refusal about the image itself names (see `_about_the_image`).
_IMAGE_FIELDS = frozenset({"image", "content", "url"})

BACKEND, REDIS, FLEET = "backend", "redis", "fleet"


@dataclass(frozen=True)
class Ttls:
    """Seconds each suggestion is kept; 0: never cached."""

    pass_: float
    review: float
    block: float

    def of(self, suggestion: Suggestion.ValueType) -> float:
        if suggestion == Suggestion.SUGGESTION_PASS:
            return self.pass_
        if suggestion == Suggestion.SUGGESTION_REVIEW:
            return self.review
        return self.block if suggestion == Suggestion.SUGGESTION_BLOCK else 0.0


@dataclass(frozen=True)
class _Shared:
    """What the shared call found, and where: its own backend call, Redis, or another replica's call."""

    outcome: Outcome
    source: str


Call = Callable[[], Awaitable[Outcome]]


@dataclass(frozen=True)
class Lookup:
    """A request's key (or why it has none), its route, and the verdict the LRU had for it."""

    key: str | Bypass
    route: Route
    hit: ModerateImageResponse | None


class VerdictCache:
    def __init__(
        self,
        *,
        policy: KeyPolicy,
        ttls: Ttls,
        lru: MemoryLru,
        metrics: CostMetrics,
        fleet: FleetStore | None = None,
    ) -> None:
        self._policy = policy
        self._ttls = ttls
        self._lru = lru
        self._metrics = metrics
        self._fleet = fleet
        self._calls: Coalescer[_Shared] = Coalescer()
        # Publishing and releasing in Redis happen after the answer, never delaying it.
        self._background: set[asyncio.Task[None]] = set()

    async def look_up(self, request: ModerateImageRequest, route: Route, image: ImageHash) -> Lookup:
        """The request's key on its route, and its verdict if the in-process LRU holds one.

        Asked once the request's fields passed validation, before its image is checked: a hit's image is
        one that passed before."""
        key = await cache_key(
            request, route.fingerprints(), self._policy, image, user_fields=route.options.cache_user_fields
        )
        value = self._lru.get(key) if isinstance(key, str) else None
        if value is None:
            return Lookup(key, route, None)
        self._metrics.hit("memory")
        return Lookup(key, route, _cached_answer(ModerateImageResponse.FromString(value), request))

    async def moderate(
        self, found: Lookup, request: ModerateImageRequest, deadline: Deadline, call: Call
    ) -> Outcome:
        """After a lookup without a hit: the shared call's verdict, or `call()`'s (the router's)."""
        key, route = found.key, found.route
        if isinstance(key, Bypass):
            self._metrics.bypassed(key.value)
            return await call()
        if not self._calls.running(key):
            shared, _ = await self._calls.run(key, lambda: self._lead(key, route, deadline, call))
            if shared.source == BACKEND:
                return shared.outcome
            self._count(shared.source)
            return _answer_from(shared.outcome, request)
        return await self._join(key, route, request, deadline, call)

    async def _join(
        self, key: str, route: Route, request: ModerateImageRequest, deadline: Deadline, call: Call
    ) -> Outcome:
        """Waits for the call an identical request started, while a call of its own could still finish."""
        wait = deadline.remaining() - route.first_latency()
        try:
            # Too little time left for a call of its own: waiting for the shared one is the best chance.
            async with asyncio.timeout(wait if wait > 0 else None):
                shared, _ = await self._calls.run(key, lambda: self._lead(key, route, deadline, call))
        except TimeoutError:
            return await self._call_and_store(key, call, None)
        outcome = shared.outcome
        if isinstance(outcome, ModerateImageResponse) and not outcome.unmoderated:
            self._count("process")
            return _answer_from(outcome, request)
        if isinstance(outcome, CallFailure) and _about_the_image(outcome):
            return outcome
        # The shared call failed (or failed closed): this request's own call may fare better.
        return await self._call_and_store(key, call, None)

    async def _lead(self, key: str, route: Route, deadline: Deadline, call: Call) -> _Shared:
        """The shared call: the fleet's verdict if Redis has or soon gets one, else the backend's."""
        owner = None
        if self._fleet is not None:
            found = await self._claim(key, route, deadline)
            if isinstance(found, _Shared):
                return found
            owner = found
        return _Shared(await self._call_and_store(key, call, owner), BACKEND)

    async def _claim(self, key: str, route: Route, deadline: Deadline) -> _Shared | str | None:
        """The verdict from Redis, or the lease's owner token, or None: call without a lease."""
        assert self._fleet is not None
        delay = POLL_FIRST
        source = REDIS
        while True:
            try:
                claim = await self._fleet.claim(
                    key, deadline.remaining() + LEASE_MARGIN, timeout=_redis_timeout(deadline)
                )
            except StoreUnavailable:
                self._metrics.bypassed("store_unavailable")
                return None
            if isinstance(claim, Hit):
                self._lru.put(key, claim.value, min(claim.ttl, self._ttls.of(claim.verdict.suggestion)))
                return _Shared(claim.verdict, source)
            if isinstance(claim, Claimed):
                return claim.owner
            # Another replica calls the backend for this key: wait for its verdict.
            source = FLEET
            left = deadline.remaining() - route.first_latency()
            if left <= 0:
                return None
            await asyncio.sleep(min(delay, left))
            delay = min(2 * delay, POLL_MAX)

    async def _call_and_store(self, key: str, call: Call, owner: str | None) -> Outcome:
        self._metrics.miss()
        try:
            outcome = await call()
        except BaseException:
            if owner is not None:
                self._later(self._release(key, owner))
            raise
        ttl = self._ttl(outcome)
        if ttl is None or not isinstance(outcome, ModerateImageResponse):
            if owner is not None:
                self._later(self._release(key, owner))
            return outcome
        value = _stored(outcome).SerializeToString()
        self._lru.put(key, value, ttl)
        if self._fleet is not None:
            self._later(self._publish(key, value, ttl, owner))
        return outcome

    def _ttl(self, outcome: Outcome) -> float | None:
        """How long the outcome may be kept; None: never (a failure, a fallback or unmoderated answer)."""
        if not isinstance(outcome, ModerateImageResponse) or outcome.fallback or outcome.unmoderated:
            return None
        return self._ttls.of(outcome.suggestion) or None

    async def _publish(self, key: str, value: bytes, ttl: float, owner: str | None) -> None:
        assert self._fleet is not None
        with contextlib.suppress(StoreUnavailable):
            await self._fleet.publish(key, value, ttl, owner, timeout=REDIS_TIMEOUT)

    async def _release(self, key: str, owner: str) -> None:
        assert self._fleet is not None
        with contextlib.suppress(StoreUnavailable):
            await self._fleet.release(key, owner, timeout=REDIS_TIMEOUT)

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        """A background task never dies silently (Redis trouble is already StoreUnavailable, suppressed)."""
        self._background.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("verdict cache: publishing to Redis failed unexpectedly (%s)", type(error).__name__)

    def _count(self, source: str) -> None:
        if source == REDIS:
            self._metrics.hit(source)
        else:
            self._metrics.coalesced(source)

    async def aclose(self) -> None:
        if self._background:
            # Their failures are logged as they end (`_finished`): waiting raises none of them.
            await asyncio.wait(list(self._background))
        if self._fleet is not None:
            await self._fleet.aclose()


def _about_the_image(failure: CallFailure) -> bool:
    """A refusal of the image's bytes (undecodable, too small, a URL refused), which any
    caller sending them would get: nothing of the caller's own is in it."""
    error = failure.error
    return KIND_POLICIES[error.kind].about_the_request and error.field in _IMAGE_FIELDS


def _redis_timeout(deadline: Deadline) -> float:
    return min(REDIS_TIMEOUT, REDIS_TIMEOUT_SHARE * deadline.remaining())


def _stored(result: ModerateImageResponse) -> ModerateImageResponse:
    """What is kept: the verdict and its request id, none of the caller's own fields."""
    stored = ModerateImageResponse()
    stored.CopyFrom(result)
    stored.data_id = ""
    stored.attempts = 0
    return stored


def _answer_from(outcome: Outcome, request: ModerateImageRequest) -> Outcome:
    if not isinstance(outcome, ModerateImageResponse):
        return outcome
    answer = ModerateImageResponse()
    answer.CopyFrom(outcome)
    return _cached_answer(answer, request)


def _cached_answer(answer: ModerateImageResponse, request: ModerateImageRequest) -> ModerateImageResponse:
    """A stored or shared verdict as this request's answer: its own data_id, no attempt, cached."""
    answer.data_id = request.data_id
    answer.attempts = 0
    answer.cached = True
    return answer
