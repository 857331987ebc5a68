"""The one table of what each failure kind means, and the statuses callers get.

`KIND_POLICIES` holds one row per `Kind`: its gRPC code and `ErrorInfo` reason, whether the retrier
retries it, whether the router fails over to the next backend, what it tells the backend's circuit,
whether it is the gateway operator's fault, whether the attempt is billed, and whether it judges the
request itself. Every one of those decisions reads the row; a `Kind` without one fails at import. What
a client may do about a reason (retry it) is the contract's: each reason is a value of
`moderation.v1.ErrorReason` (error_reasons.proto), whose options both the gateway and the client read.

Every error status carries exactly one `google.rpc.ErrorInfo` (stable UPPER_SNAKE reason, our domain,
metadata naming the upstream code, its request id and the attempts made), plus `BadRequest` for
INVALID_ARGUMENT, `RetryInfo` where waiting helps and `QuotaFailure` for an exhausted quota. Statuses
are `google.rpc.Status` messages so the streaming RPCs can return them per item.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, TypeAlias

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from moderation.v1 import error_reasons_pb2

from backends.errors import BackendError, Kind
from common.scrub import CODE, REQUEST_ID, Scrubber, excerpt
from service.quotas.refusal import QuotaExhausted
from service.validation import FieldViolation, ValidationError

__all__ = [
    "DOMAIN",
    "KIND_POLICIES",
    "REASON_OPTIONS",
    "CallFailure",
    "CircuitEffect",
    "Failure",
    "InternalFailure",
    "KindPolicy",
    "code_and_reason",
    "failure_status",
    "over_capacity_status",
    "stream_stopped_status",
    "unauthenticated_status",
]

DOMAIN = "moderation-gateway"
# gRPC sends the message and the details as metadata, which it refuses past 8 KB (the soft limit; the
# caller then gets RESOURCE_EXHAUSTED and no ErrorInfo). Each piece is bounded, so that a status stays
# under about 4 KB on the wire whatever the request quoted: the message at most 3x its characters once
# percent-encoded, the details 4/3x their serialised size once base64-encoded.
MAX_MESSAGE_CHARS = 400
MAX_DESCRIPTION_CHARS = 120
MAX_FIELD_CHARS = 32
MAX_METADATA_CHARS = 96
MAX_VIOLATIONS = 10


class CircuitEffect(enum.Enum):
    """What a failure tells the circuit breaker of the backend that failed."""

    # The backend is unhealthy: one more failure towards opening its circuit.
    FAILURE = "failure"
    # The backend answered, if only to refuse: it works.
    SUCCESS = "success"
    # Nothing reached the backend (the gateway's own rate governor said no).
    NONE = "none"


# The ErrorReason values' names start with it; ErrorInfo's reasons do not.
REASON_PREFIX = "ERROR_REASON_"
# Every reason the contract declares, with what a client may do about it.
REASON_OPTIONS: Final[Mapping[str, error_reasons_pb2.ErrorReasonOptions]] = MappingProxyType(
    {
        value.name.removeprefix(REASON_PREFIX): value.GetOptions().Extensions[error_reasons_pb2.reason]
        for value in error_reasons_pb2.ErrorReason.DESCRIPTOR.values
        if value.number != error_reasons_pb2.ERROR_REASON_UNSPECIFIED
    }
)


@dataclass(frozen=True, kw_only=True)
class KindPolicy:
    """Everything the gateway decides from a failure's kind. No field has a default: a row is complete."""

    code: grpc.StatusCode
    reason: str
    # Retried by the retrier (each attempt is billed, so only transient faults).
    retried: bool
    # Handed to the next backend of the route's chain, which may not share the failure.
    fails_over: bool
    circuit: CircuitEffect
    # The gateway's configuration or account is at fault: the caller is not shown the upstream's text,
    # which may name the gateway's key id or account.
    operator_fault: bool
    # Seconds a caller should wait before retrying (`RetryInfo`), when waiting helps.
    retry_delay: float | None
    # The attempt may have reached a paid backend's moderation, which bills it (metering, quotas).
    billed: bool
    # The failure judges the request itself (for INVALID_REQUEST, the field it names): an identical
    # request would get it too, so the verdict cache shares it with requests waiting on the same call.
    about_the_request: bool

    @property
    def client_retries(self) -> bool:
        """Whether the contract lets a client retry it (`(moderation.v1.reason).retryable`)."""
        return REASON_OPTIONS[self.reason].retryable


def _complete(rows: dict[Kind, KindPolicy]) -> Mapping[Kind, KindPolicy]:
    missing = [kind.name for kind in Kind if kind not in rows]
    if missing:
        raise LookupError(f"service/errors.py has no KindPolicy row for {', '.join(missing)}")
    undeclared = [row.reason for row in rows.values() if row.reason not in REASON_OPTIONS]
    if undeclared:
        raise LookupError(f"moderation.v1.ErrorReason has no value for {', '.join(undeclared)}")
    return MappingProxyType(rows)


KIND_POLICIES: Final = _complete(
    {
        Kind.INVALID_REQUEST: KindPolicy(
            code=grpc.StatusCode.INVALID_ARGUMENT,
            reason="BACKEND_REJECTED_REQUEST",
            retried=False,
            # The next backend would judge the same image the same way.
            fails_over=False,
            circuit=CircuitEffect.SUCCESS,
            operator_fault=False,
            retry_delay=None,
            billed=False,
            about_the_request=True,
        ),
        Kind.IMAGE_DOWNLOAD_FAILED: KindPolicy(
            code=grpc.StatusCode.FAILED_PRECONDITION,
            reason="IMAGE_DOWNLOAD_FAILED",
            retried=False,
            fails_over=False,
            circuit=CircuitEffect.SUCCESS,
            operator_fault=False,
            retry_delay=None,
            billed=False,
            about_the_request=False,
        ),
        Kind.RATE_LIMITED: KindPolicy(
            code=grpc.StatusCode.RESOURCE_EXHAUSTED,
            reason="BACKEND_RATE_LIMITED",
            retried=True,
            fails_over=True,
            circuit=CircuitEffect.SUCCESS,
            operator_fault=False,
            retry_delay=1.0,
            billed=False,
            about_the_request=False,
        ),
        Kind.QUOTA_EXHAUSTED: KindPolicy(
            code=grpc.StatusCode.RESOURCE_EXHAUSTED,
            reason="BACKEND_QUOTA_EXHAUSTED",
            retried=False,
            fails_over=True,
            circuit=CircuitEffect.SUCCESS,
            operator_fault=False,
            retry_delay=None,
            billed=False,
            about_the_request=False,
        ),
        Kind.MISCONFIGURED: KindPolicy(
            # The gateway's own configuration: an operator's problem, never the caller's authentication.
            code=grpc.StatusCode.INTERNAL,
            reason="BACKEND_MISCONFIGURED",
            retried=False,
            fails_over=True,
            circuit=CircuitEffect.FAILURE,
            operator_fault=True,
            retry_delay=None,
            billed=False,
            about_the_request=False,
        ),
        Kind.ACCOUNT_UNAVAILABLE: KindPolicy(
            code=grpc.StatusCode.FAILED_PRECONDITION,
            reason="BACKEND_ACCOUNT_UNAVAILABLE",
            retried=False,
            fails_over=True,
            circuit=CircuitEffect.FAILURE,
            operator_fault=True,
            retry_delay=None,
            billed=False,
            about_the_request=False,
        ),
        Kind.UNAVAILABLE: KindPolicy(
            code=grpc.StatusCode.UNAVAILABLE,
            reason="BACKEND_UNAVAILABLE",
            retried=True,
            fails_over=True,
            circuit=CircuitEffect.FAILURE,
            operator_fault=False,
            retry_delay=1.0,
            # IMS bills the `InternalError` and `ModelCallFailed` it answers.
            billed=True,
            about_the_request=False,
        ),
        Kind.TIMEOUT: KindPolicy(
            code=grpc.StatusCode.DEADLINE_EXCEEDED,
            reason="BACKEND_TIMEOUT",
            retried=False,
            fails_over=True,
            # Unless the caller's own short deadline ran out (the router checks).
            circuit=CircuitEffect.FAILURE,
            operator_fault=False,
            retry_delay=None,
            # IMS bills a call its client gave up on.
            billed=True,
            about_the_request=False,
        ),
        Kind.FAILED: KindPolicy(
            code=grpc.StatusCode.INTERNAL,
            reason="BACKEND_FAILED",
            retried=False,
            fails_over=True,
            circuit=CircuitEffect.SUCCESS,
            operator_fault=True,
            retry_delay=None,
            # `FailedOperation`: IMS bills it.
            billed=True,
            about_the_request=False,
        ),
        Kind.THROTTLED: KindPolicy(
            code=grpc.StatusCode.RESOURCE_EXHAUSTED,
            reason="RATE_BUDGET_EXHAUSTED",
            retried=False,
            fails_over=True,
            circuit=CircuitEffect.NONE,
            operator_fault=False,
            retry_delay=1.0,
            billed=False,
            about_the_request=False,
        ),
        Kind.OVERLOADED: KindPolicy(
            code=grpc.StatusCode.RESOURCE_EXHAUSTED,
            reason="BACKEND_OVERLOADED",
            retried=False,
            fails_over=True,
            # Busy, not broken: the backend refused work it had no room for.
            circuit=CircuitEffect.NONE,
            operator_fault=False,
            retry_delay=1.0,
            billed=False,
            about_the_request=False,
        ),
        Kind.CALLER_QUOTA_EXHAUSTED: KindPolicy(
            code=grpc.StatusCode.RESOURCE_EXHAUSTED,
            reason="CALLER_QUOTA_EXHAUSTED",
            retried=False,
            # A backend of the chain that bills nothing is not governed by the quota.
            fails_over=True,
            circuit=CircuitEffect.NONE,
            operator_fault=False,
            # The error carries the time until the quota's period ends.
            retry_delay=None,
            billed=False,
            about_the_request=False,
        ),
        Kind.QUOTA_UNAVAILABLE: KindPolicy(
            code=grpc.StatusCode.UNAVAILABLE,
            reason="QUOTA_STORE_UNAVAILABLE",
            retried=False,
            fails_over=True,
            circuit=CircuitEffect.NONE,
            operator_fault=False,
            retry_delay=1.0,
            billed=False,
            about_the_request=False,
        ),
        # ABORTED, not UNAVAILABLE: sending the same submission again (its idempotency key) answers the
        # same task; only a new submission, a new call paid for, can succeed.
        Kind.OUTCOME_IN_DOUBT: KindPolicy(
            code=grpc.StatusCode.ABORTED,
            reason="TASK_OUTCOME_IN_DOUBT",
            retried=False,
            # The next backend would be a second paid call for the image just as well.
            fails_over=False,
            circuit=CircuitEffect.NONE,
            operator_fault=False,
            retry_delay=None,
            # This attempt was not sent (the one that may have been billed was the stopped replica's).
            billed=False,
            # About the task, not the image: a call sharing it (the verdict cache) makes its own.
            about_the_request=False,
        ),
    }
)


class CallFailure(Exception):
    """A call that got no result: the last backend error seen, from which backend, after how many calls.

    Built once, by whoever saw the failure last (the retrier, or the router when no backend could be
    tried), as python-api-core's RetryError carries its last exception; nothing changes it in flight.
    `backend` names the backend the failure is about (for the router's own, an open circuit or no time
    left, the one it could not try). `attempt_budget` is the time the last attempt had (None: none was
    sent): the router tells a slow backend from a starved attempt by it.
    """

    def __init__(
        self, error: BackendError, *, backend: str, attempts: int, attempt_budget: float | None = None
    ) -> None:
        super().__init__(error.message)
        self.error: Final = error
        self.backend: Final = backend
        self.attempts: Final = attempts
        self.attempt_budget: Final = attempt_budget

    def __repr__(self) -> str:
        return f"CallFailure({self.error!r}, backend={self.backend!r}, attempts={self.attempts})"


@dataclass(frozen=True)
class InternalFailure:
    """A bug in the gateway: the caller gets a bare INTERNAL_ERROR, the log gets the traceback."""

    error: Exception


# Why a call has no result; each becomes the caller's status through `failure_status`.
Failure: TypeAlias = CallFailure | ValidationError | InternalFailure


def code_and_reason(failure: Failure) -> tuple[grpc.StatusCode, str]:
    """The failure's gRPC code and `ErrorInfo` reason, as its status carries them."""
    if isinstance(failure, CallFailure):
        row = KIND_POLICIES[failure.error.kind]
        return row.code, row.reason
    if isinstance(failure, ValidationError):
        return grpc.StatusCode.INVALID_ARGUMENT, failure.violations[0].reason
    return grpc.StatusCode.INTERNAL, "INTERNAL_ERROR"


# How a text is shown in a status, cut to a number of characters: `Scrubber.excerpt` for text quoting a
# caller or a backend (scrubbed of the secrets first), `excerpt` for the gateway's own words.
Shown: TypeAlias = Callable[[str, int], str]


def failure_status(failure: Failure, scrubber: Scrubber) -> status_pb2.Status:
    """The status the caller gets, with its details, through the gateway's outward `scrubber`."""
    if isinstance(failure, CallFailure):
        return _backend_status(failure, scrubber)
    if isinstance(failure, ValidationError):
        return _validation_status(failure, scrubber.excerpt)
    code, reason = code_and_reason(failure)
    return _status(code, "internal error in the moderation gateway", reason, {}, shown=excerpt)


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _status(
    code: grpc.StatusCode, message: str, reason: str, metadata: dict[str, str], *details: object, shown: Shown
) -> status_pb2.Status:
    """Every status is built here: the message and metadata `shown` (scrubbed of secrets), cut to size."""
    info = error_details_pb2.ErrorInfo(
        reason=reason,
        domain=DOMAIN,
        metadata={key: shown(value, MAX_METADATA_CHARS) for key, value in metadata.items()},
    )
    return status_pb2.Status(
        code=code.value[0],
        message=shown(message, MAX_MESSAGE_CHARS),
        details=[_packed(info), *(_packed(d) for d in details)],
    )


def _retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(seconds * 1e9))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def _quota_failure(subject: str, description: str, shown: Shown) -> error_details_pb2.QuotaFailure:
    return error_details_pb2.QuotaFailure(
        violations=[
            error_details_pb2.QuotaFailure.Violation(
                subject=shown(subject, MAX_METADATA_CHARS),
                description=shown(description, MAX_DESCRIPTION_CHARS),
            )
        ]
    )


def _bad_request(violations: list[FieldViolation], shown: Shown) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=shown(v.field, MAX_FIELD_CHARS),
                description=shown(v.description, MAX_DESCRIPTION_CHARS),
                reason=shown(v.reason, MAX_FIELD_CHARS),
            )
            for v in violations[:MAX_VIOLATIONS]
        ]
    )


def _validation_status(error: ValidationError, shown: Shown) -> status_pb2.Status:
    code, reason = code_and_reason(error)
    return _status(
        code,
        f"invalid request: {error}",
        reason,
        {"field": error.violations[0].field},
        _bad_request(error.violations, shown),
        shown=shown,
    )


def _backend_status(failure: CallFailure, scrubber: Scrubber) -> status_pb2.Status:
    error, backend = failure.error, failure.backend
    row = KIND_POLICIES[error.kind]
    metadata = {"backend": backend, "attempts": str(failure.attempts)}
    if error.upstream_code:
        metadata["upstream_code"] = scrubber.token(error.upstream_code, CODE)
    if error.request_id:
        metadata["upstream_request_id"] = scrubber.token(error.request_id, REQUEST_ID)
    if row.operator_fault:
        message = (
            f"backend {backend!r} refused the gateway's request "
            f"({metadata.get('upstream_code') or error.kind.value}); "
            "this is a gateway configuration or account problem, not the caller's: contact its operators"
        )
    else:
        message = f"backend {backend!r}: {error.message}"
    details: list[object] = []
    if error.kind is Kind.INVALID_REQUEST:
        field = error.field or "image"
        details.append(_bad_request([FieldViolation(field, error.message, row.reason)], scrubber.excerpt))
    if isinstance(error, QuotaExhausted):
        details.append(
            _quota_failure(
                f"quota:{error.quota}", f"{error.limit} billed calls a {error.period}", scrubber.excerpt
            )
        )
    elif error.kind is Kind.QUOTA_EXHAUSTED:
        details.append(_quota_failure(f"backend:{backend}", error.message, scrubber.excerpt))
    retry_delay = error.retry_after if error.retry_after is not None else row.retry_delay
    if retry_delay is not None:
        details.append(_retry_info(retry_delay))
    return _status(row.code, message, row.reason, metadata, *details, shown=scrubber.excerpt)


def stream_stopped_status(reason: str, items_read: int, idle_timeout: float | None) -> status_pb2.Status:
    """How a stream ends when the server stops reading it early; every item read was answered."""
    metadata = {"items_read": str(items_read)}
    if reason == "draining":
        return _status(
            grpc.StatusCode.UNAVAILABLE,
            f"the gateway is shutting down: the {items_read} items read were answered; "
            f"resend the rest (from index {items_read}) to another instance",
            "SERVER_DRAINING",
            metadata,
            _retry_info(0.0),
            shown=excerpt,
        )
    return _status(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        f"the stream sent nothing for {idle_timeout:g} s with no item in flight; it was closed",
        "STREAM_IDLE",
        metadata,
        shown=excerpt,
    )


def unauthenticated_status() -> status_pb2.Status:
    return _status(
        grpc.StatusCode.UNAUTHENTICATED,
        "send `authorization: Bearer <token>` metadata with a token the gateway's operators gave you",
        "CALLER_UNAUTHENTICATED",
        {},
        shown=excerpt,
    )


def over_capacity_status(limit: int, *, per_caller: bool) -> status_pb2.Status:
    """RESOURCE_EXHAUSTED for a call past the server's call cap, or past its caller's bulkhead."""
    if per_caller:
        message = f"this caller already has {limit} calls in flight, the most one caller may: retry later"
        reason = "CALLER_OVER_CAPACITY"
    else:
        message = f"the gateway already runs {limit} calls, its limit: retry later or on another instance"
        reason = "SERVER_OVER_CAPACITY"
    return _status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        message,
        reason,
        {"limit": str(limit)},
        _retry_info(1.0),
        shown=excerpt,
    )
