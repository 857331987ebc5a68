"""The policy in the call path: image lists before any backend call, the rest on every answer on the way
out (the verdict cache, inside, keeps the backend's own answers), each decision counted and traced."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

from moderation.v1.moderation_service_pb2 import (
    Decision,
    DecisionSource,
    ModerateImageRequest,
    ModerateImageResponse,
)
from opentelemetry import trace

from backends.image_limits import ImageLimits
from service.errors import Failure, InternalFailure
from service.image_hash import ImageHash
from service.observe import SUGGESTION_NAMES
from service.policy.decide import decide, searches_text
from service.policy.fields import SOURCE_NAMES, decision_fields
from service.policy.imagelists import ListHit
from service.policy.metrics import PolicyMetrics
from service.policy.pdq import pdq_hash
from service.policy.rules import Policy, Rules
from service.policy.shadow import ShadowTally
from service.policy.thresholds import BLOCK, NORMAL, PASS
from service.validation import ValidationError, validate

__all__ = ["PolicyGate", "listed"]

Outcome = ModerateImageResponse | Failure
LISTED_SCORE = 100


class PolicyGate:
    def __init__(self, policy: Policy, metrics: PolicyMetrics) -> None:
        # Replaced whole when the files change (`service.policy.reload`); a call uses the one it read.
        self.policy = policy
        self.metrics = metrics
        self._shadow = ShadowTally(metrics)

    async def answer(
        self,
        request: ModerateImageRequest,
        image: ImageHash,
        limits: ImageLimits,
        moderate: Callable[[], Awaitable[Outcome]],
    ) -> Outcome:
        """`moderate()`'s outcome decided by the request's BizType's rules, or a listed image's answer
        (`image`: the hash of the request's content; `limits`: what its route's backends take, which a
        listed image is checked against too). Never raises (but for cancellation)."""
        try:
            return await self._answer(request, image, limits, moderate)
        except Exception as error:
            return InternalFailure(error)

    async def _answer(
        self,
        request: ModerateImageRequest,
        image: ImageHash,
        limits: ImageLimits,
        moderate: Callable[[], Awaitable[Outcome]],
    ) -> Outcome:
        policy = self.policy
        rules = policy.rules(request.biz_type)
        if (rules.exact_lists or rules.near_lists) and request.WhichOneof("image") == "content":
            listed_hit = await listed(rules, image)
            if listed_hit is not None:
                try:
                    validate(request, limits)
                except ValidationError as failure:
                    return failure
                return self._decided(request, _listed_answer(request, listed_hit, policy.version))
        outcome = await moderate()
        if not isinstance(outcome, ModerateImageResponse):
            return outcome
        if searches_text(rules, outcome):
            # The detectors' search takes milliseconds of Python: in a worker thread, off the event loop.
            answer, shadow = await asyncio.to_thread(_decide, rules, outcome, policy.version)
        else:
            answer, shadow = _decide(rules, outcome, policy.version)
        if shadow is not None:
            self._shadow.compare(request, answer, shadow)
        return self._decided(request, answer)

    def _decided(self, request: ModerateImageRequest, answer: ModerateImageResponse) -> ModerateImageResponse:
        decision = answer.decision
        biz_type = self.metrics.biz_type(request.biz_type)
        self.metrics.decisions.add(
            (
                ("biz_type", biz_type),
                ("source", SOURCE_NAMES[decision.source]),
                ("suggestion", SUGGESTION_NAMES[answer.suggestion]),
            )
        )
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(
                {
                    f"moderation.decision.{k}": v
                    for k, v in decision_fields(decision, self.metrics.outward).items()
                }
            )
        return answer


def _decide(
    rules: Rules, backend: ModerateImageResponse, version: str
) -> tuple[ModerateImageResponse, ModerateImageResponse | None]:
    """The live answer, and the shadow policy's when the BizType has one."""
    shadow = decide(rules.shadow, backend, version) if rules.shadow is not None else None
    return decide(rules, backend, version), shadow


async def listed(rules: Rules, image: ImageHash) -> ListHit | None:
    """The list entry the image matches: exact lists first (deny, then allow), then near-duplicates."""
    digest = await image.digest() if rules.exact_lists else b""
    for exact in rules.exact_lists:
        hit = exact.find(digest)
        if hit is not None:
            return hit
    if not rules.near_lists:
        return None
    hashed = await asyncio.to_thread(pdq_hash, image.content)
    if hashed is None:
        return None
    for near in rules.near_lists:
        hit = near.find(hashed)
        if hit is not None:
            return hit
    return None


def _listed_answer(request: ModerateImageRequest, hit: ListHit, version: str) -> ModerateImageResponse:
    """The answer to an image on a list: no backend saw it, so it carries no backend, request id or
    results; never cached (the cache holds only backends' answers)."""
    allowed = hit.kind == "allow"
    return ModerateImageResponse(
        suggestion=PASS if allowed else BLOCK,
        label=NORMAL if allowed else hit.label,
        score=0 if allowed else LISTED_SCORE,
        data_id=request.data_id,
        biz_type=request.biz_type,
        file_md5=hashlib.md5(request.content, usedforsecurity=False).hexdigest(),
        decision=Decision(
            source=DecisionSource.DECISION_SOURCE_ALLOW_LIST
            if allowed
            else DecisionSource.DECISION_SOURCE_DENY_LIST,
            rule=hit.list_name,
            matched=hit.entry,
            policy_version=version,
        ),
    )
