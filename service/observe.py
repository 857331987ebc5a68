"""What each image's outcome records: span attributes, metrics and the access log's fields.

All of it is read from the typed outcome (the result, or the failure the caller's status is built
from), never by unpacking the `google.rpc.Status` sent to the caller. Image bytes, URLs and secrets are
never recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, TypeAlias

import grpc
from google.rpc import status_pb2
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse, Suggestion
from opentelemetry import metrics, trace

from common.scrub import LABEL, REQUEST_ID, Scrubber
from service.auth import CALLER
from service.errors import CallFailure, Failure, InternalFailure, code_and_reason
from service.governor import Priority
from service.logs import log_access
from service.policy.fields import decision_fields
from service.telemetry import DEFAULT_MAX_CALLERS, BoundedLabel, DictCounter, Labels, Metrics

__all__ = [
    "CODE_NAMES",
    "CostMetrics",
    "Observer",
    "Outcome",
    "access_fields",
    "outcome_attributes",
    "status_code_name",
]

log = logging.getLogger(__name__)

# The result, or why there is none.
Outcome: TypeAlias = ModerateImageResponse | Failure
Attributes: TypeAlias = dict[str, str | int]

CODE_NAMES: Final[Mapping[grpc.StatusCode, str]] = MappingProxyType({c: c.name for c in grpc.StatusCode})
CODES_BY_VALUE: Final[Mapping[int, grpc.StatusCode]] = MappingProxyType(
    {c.value[0]: c for c in grpc.StatusCode}
)
# `PASS`, `REVIEW`, `BLOCK`, `UNSPECIFIED` by the enum's value: how logs and metric labels name them.
SUGGESTION_NAMES: Final[Mapping[int, str]] = MappingProxyType(
    {value: name.removeprefix("SUGGESTION_") for name, value in Suggestion.items()}
)
# Distinct biz_type label values of the cost metrics; later ones are counted as `other`, so a caller
# sending made-up biz_types cannot grow the series without bound.
MAX_BIZ_TYPE_LABELS = 200


class CostMetrics:
    """What paid backends bill and what the verdict cache saves (README: Verdict cache, Metrics).

    The Prometheus names are contract (dashboards and alerts are written against them):
    `moderation_billed_calls_total`, `moderation_estimated_cost_cny_total` (both by `backend`,
    `caller`, `biz_type`), `moderation_cache_hits_total`
    (by `moderation_store`), `moderation_cache_misses_total`, `moderation_cache_coalesced_total` (by
    `moderation_scope`), `moderation_billed_calls_saved_total`, `moderation_cache_bypassed_total` (by
    `moderation_reason`).
    """

    def __init__(
        self, meter: metrics.Meter, *, outward: Scrubber, callers: BoundedLabel | None = None
    ) -> None:
        """`outward`: the gateway's scrubber, which biz_type labels pass through. `callers`: the `caller`
        label's values, shared with the other metrics that have one."""
        self._outward = outward
        self._callers = callers or BoundedLabel(DEFAULT_MAX_CALLERS)
        self._biz_types = BoundedLabel(MAX_BIZ_TYPE_LABELS)

        # Every backend call and every cache hit counts: in dicts, as an SDK counter's `add` costs ~11 µs.
        def calls(name: str, description: str) -> DictCounter:
            return DictCounter(meter, name, unit="{call}", description=description)

        self._billed = calls(
            "moderation.billed_calls", "Backend calls a paid backend bills, by backend, caller and biz_type"
        )
        self._cost = DictCounter(
            meter,
            "moderation.estimated_cost_cny",
            unit="{CNY}",
            description="Billed calls priced at each backend's price, by backend, caller and biz_type",
        )

        self._hits = calls("moderation.cache.hits", "Answers from the verdict cache, by store")
        self._misses = calls(
            "moderation.cache.misses", "Cache lookups that found no verdict (the backend was called)"
        )
        self._coalesced = calls(
            "moderation.cache.coalesced",
            "Answers shared from an identical request's call, by scope (process, fleet)",
        )
        self._saved = calls(
            "moderation.billed_calls_saved", "Backend calls not made: cache hits and coalesced answers"
        )
        self._bypassed = calls(
            "moderation.cache.bypassed",
            "Requests not looked up in the cache, by reason (user_fields, url, "
            "store_unavailable: Redis unreachable or slow)",
        )

    def billed_call(self, backend: str, biz_type: str, price: float) -> None:
        """One call `backend` bills, at `price` (CNY)."""
        # Labels as the issue names them (dashboards sum by them): no `moderation_` prefix here.
        labels = (
            ("backend", backend),
            ("caller", self._callers(CALLER.get())),
            ("biz_type", self._biz_types(self._outward.excerpt(biz_type))),
        )
        self._billed.add(labels)
        self._cost.add(labels, price)

    def hit(self, store: str) -> None:
        self._hits.add((("moderation.store", store),))
        self._saved.add(())

    def coalesced(self, scope: str) -> None:
        self._coalesced.add((("moderation.scope", scope),))
        self._saved.add(())

    def miss(self) -> None:
        self._misses.add(())

    def bypassed(self, reason: str) -> None:
        self._bypassed.add((("moderation.reason", reason),))


@dataclass
class StreamTally:
    """A stream's items by outcome, and the status the server ended it with, if it did."""

    items: int = 0
    errors: int = 0
    ending: grpc.StatusCode | None = None

    def __call__(self, outcome: Outcome) -> None:
        self.items += 1
        self.errors += not isinstance(outcome, ModerateImageResponse)

    def ended_with(self, status: status_pb2.Status) -> None:
        self.ending = CODES_BY_VALUE[status.code]


def status_code_name(outcome: Outcome) -> str:
    """The gRPC code of the answer, as its name (`OK`, `INVALID_ARGUMENT`, ...)."""
    if isinstance(outcome, ModerateImageResponse):
        return CODE_NAMES[grpc.StatusCode.OK]
    code, _ = code_and_reason(outcome)
    return CODE_NAMES[code]


def outcome_attributes(request: ModerateImageRequest, outcome: Outcome, scrubber: Scrubber) -> Attributes:
    """The documented `moderation.*` span attributes of one image.

    Through the outward `scrubber` and bounded: `biz_type` is the caller's (unvalidated when the
    request was refused), the label and request id the backend's, and the label is a metric label too.
    """
    biz_type = scrubber.excerpt(request.biz_type)
    if not isinstance(outcome, ModerateImageResponse):
        _, reason = code_and_reason(outcome)
        return {
            "moderation.biz_type": biz_type,
            "moderation.status_code": status_code_name(outcome),
            "moderation.error.reason": reason,
            "moderation.backend": outcome.backend if isinstance(outcome, CallFailure) else "",
        }
    return {
        "moderation.biz_type": biz_type,
        "moderation.status_code": status_code_name(outcome),
        **_verdict_labels(outcome, scrubber),
        "moderation.score": outcome.score,
        "moderation.backend": outcome.backend,
        "moderation.backend_request_id": scrubber.token(outcome.request_id, REQUEST_ID),
        "moderation.attempts": outcome.attempts,
        "moderation.fallback": str(outcome.fallback).lower(),
        "moderation.unmoderated": str(outcome.unmoderated).lower(),
    }


def access_fields(request: ModerateImageRequest, outcome: Outcome, scrubber: Scrubber) -> dict[str, object]:
    """A unary call's access-log fields beyond method, code and duration: those of `outcome_attributes`
    a log reader needs, built directly (this runs on every call, a cache hit's included)."""
    # The caller's, unvalidated when the request was refused.
    data_id = scrubber.excerpt(request.data_id)
    if not isinstance(outcome, ModerateImageResponse):
        _, reason = code_and_reason(outcome)
        return {
            "backend": outcome.backend if isinstance(outcome, CallFailure) else "",
            "data_id": data_id,
            "backend_request_id": "",
            "suggestion": "",
            "attempts": 0,
            "reason": reason,
            "cached": False,
        }
    return {
        "backend": outcome.backend,
        "data_id": data_id,
        "backend_request_id": scrubber.token(outcome.request_id, REQUEST_ID),
        "suggestion": SUGGESTION_NAMES[outcome.suggestion],
        "attempts": outcome.attempts,
        "reason": "",
        "cached": outcome.cached,
        **({"decision": decision_fields(outcome.decision, scrubber)} if outcome.HasField("decision") else {}),
    }


class Observer:
    """Records each image on its span and in the metrics, each failure in the log, each RPC's access line."""

    def __init__(self, metrics: Metrics, outward: Scrubber) -> None:
        self._metrics = metrics
        self._outward = outward

    async def image(
        self, method: str, request: ModerateImageRequest, priority: Priority, outcome: Awaitable[Outcome]
    ) -> Outcome:
        """Awaits one image's outcome, counted in flight meanwhile, and records it on the current span."""
        kind = "unary" if priority is Priority.INTERACTIVE else "stream"
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._metrics.in_flight[kind] += 1
        try:
            result = await outcome
        finally:
            self._metrics.in_flight[kind] -= 1
        self._record(method, request, result, loop.time() - started)
        return result

    def unary_call(
        self, method: str, request: ModerateImageRequest, outcome: Outcome, seconds: float
    ) -> None:
        log_access(
            method, status_code_name(outcome), seconds, **access_fields(request, outcome, self._outward)
        )

    @contextmanager
    def stream_call(self, method: str) -> Iterator[StreamTally]:
        """One access line per stream, however it ends, counting its items by outcome."""
        started = asyncio.get_running_loop().time()
        tally = StreamTally()
        try:
            yield tally
        except (asyncio.CancelledError, GeneratorExit):
            tally.ending = tally.ending or grpc.StatusCode.CANCELLED
            raise
        except BaseException:
            # The server's own end of a stream (draining, idle) raises through here with its code set.
            tally.ending = tally.ending or grpc.StatusCode.UNKNOWN
            raise
        finally:
            code = CODE_NAMES[tally.ending or grpc.StatusCode.OK]
            seconds = asyncio.get_running_loop().time() - started
            log_access(method, code, seconds, items=tally.items, errors=tally.errors)

    def _record(self, method: str, request: ModerateImageRequest, outcome: Outcome, seconds: float) -> None:
        _log_failure(outcome)
        caller = CALLER.get()
        span = trace.get_current_span()
        if span.is_recording():
            # Only a sampled call's span gets its attributes: an unsampled one computes none of them.
            attributes = outcome_attributes(request, outcome, self._outward)
            if caller:
                attributes["moderation.caller"] = caller
            span.set_attributes(attributes)
            if not isinstance(outcome, ModerateImageResponse):
                span.set_status(trace.StatusCode.ERROR, str(attributes["moderation.error.reason"]))
        code = status_code_name(outcome)
        suggestion, label = _verdict(outcome, self._outward)
        labels: Labels = (
            ("rpc.method", method),
            ("rpc.grpc.status_code", code),
            ("moderation.suggestion", suggestion),
            ("moderation.label", label),
        )
        if caller:
            labels += (("moderation.caller", self._metrics.callers(caller)),)
        self._metrics.requests.add(labels)
        self._metrics.duration.record(seconds, {"rpc.method": method, "rpc.grpc.status_code": code})


def _verdict(outcome: Outcome, scrubber: Scrubber) -> tuple[str, str]:
    """The suggestion and label as metric labels (the label is a word or `unrecognised`); both empty on
    failure."""
    if not isinstance(outcome, ModerateImageResponse):
        return "", ""
    return SUGGESTION_NAMES[outcome.suggestion], scrubber.token(outcome.label, LABEL)


def _verdict_labels(outcome: Outcome, scrubber: Scrubber) -> dict[str, str]:
    suggestion, label = _verdict(outcome, scrubber)
    return {"moderation.suggestion": suggestion, "moderation.label": label}


def _log_failure(outcome: Outcome) -> None:
    if isinstance(outcome, CallFailure):
        error = outcome.error
        log.warning(
            "backend %s failed after %d attempt(s): %s (upstream code %r, request id %r)",
            outcome.backend,
            outcome.attempts,
            error.message,
            error.upstream_code,
            error.request_id,
        )
    elif isinstance(outcome, InternalFailure):
        log.error("unexpected error while moderating", exc_info=outcome.error)
