"""The one table from failures to gRPC statuses, and the rich details each status carries.

Every error status carries exactly one `google.rpc.ErrorInfo` (stable UPPER_SNAKE reason, our domain,
metadata naming the upstream code, its request id and the attempts made), plus `BadRequest` for
INVALID_ARGUMENT, `RetryInfo` where waiting helps and `QuotaFailure` for an exhausted quota. Statuses
are `google.rpc.Status` messages so the streaming RPCs can return them per item.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from backends.errors import BackendError, Kind
from service.validation import FieldViolation, ValidationError

DOMAIN = "moderation-gateway"


@dataclass(frozen=True)
class Mapping:
    code: grpc.StatusCode
    reason: str
    # Seconds a caller should wait before retrying, when waiting helps.
    retry_delay: float | None = None


KIND_TO_STATUS: dict[Kind, Mapping] = {
    Kind.INVALID_REQUEST: Mapping(grpc.StatusCode.INVALID_ARGUMENT, "BACKEND_REJECTED_REQUEST"),
    Kind.IMAGE_DOWNLOAD_FAILED: Mapping(grpc.StatusCode.FAILED_PRECONDITION, "IMAGE_DOWNLOAD_FAILED"),
    Kind.RATE_LIMITED: Mapping(grpc.StatusCode.RESOURCE_EXHAUSTED, "BACKEND_RATE_LIMITED", retry_delay=1.0),
    Kind.QUOTA_EXHAUSTED: Mapping(grpc.StatusCode.RESOURCE_EXHAUSTED, "BACKEND_QUOTA_EXHAUSTED"),
    # The gateway's own configuration: an operator's problem, never the caller's authentication.
    Kind.MISCONFIGURED: Mapping(grpc.StatusCode.INTERNAL, "BACKEND_MISCONFIGURED"),
    Kind.ACCOUNT_UNAVAILABLE: Mapping(grpc.StatusCode.FAILED_PRECONDITION, "BACKEND_ACCOUNT_UNAVAILABLE"),
    Kind.UNAVAILABLE: Mapping(grpc.StatusCode.UNAVAILABLE, "BACKEND_UNAVAILABLE", retry_delay=1.0),
    Kind.TIMEOUT: Mapping(grpc.StatusCode.DEADLINE_EXCEEDED, "BACKEND_TIMEOUT"),
    Kind.FAILED: Mapping(grpc.StatusCode.INTERNAL, "BACKEND_FAILED"),
    Kind.THROTTLED: Mapping(grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_BUDGET_EXHAUSTED", retry_delay=1.0),
}

# What a caller is told when the fault is the gateway operator's to fix: the upstream's own message
# may name the gateway's key id or account, which is not the caller's business.
_OPERATOR_FAULTS = frozenset({Kind.MISCONFIGURED, Kind.ACCOUNT_UNAVAILABLE, Kind.FAILED})


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _status(
    code: grpc.StatusCode, message: str, reason: str, metadata: dict[str, str], *details: object
) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata)
    return status_pb2.Status(
        code=code.value[0], message=message, details=[_packed(info), *(_packed(d) for d in details)]
    )


def _retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(seconds * 1e9))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def _bad_request(violations: list[FieldViolation]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=v.field, description=v.description, reason=v.reason
            )
            for v in violations
        ]
    )


def validation_status(error: ValidationError) -> status_pb2.Status:
    first = error.violations[0]
    return _status(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"invalid request: {error}",
        first.reason,
        {"field": first.field},
        _bad_request(error.violations),
    )


def backend_status(error: BackendError, backend: str) -> status_pb2.Status:
    mapping = KIND_TO_STATUS[error.kind]
    metadata = {"backend": backend, "attempts": str(error.attempts)}
    if error.upstream_code:
        metadata["upstream_code"] = error.upstream_code
    if error.request_id:
        metadata["upstream_request_id"] = error.request_id
    if error.kind in _OPERATOR_FAULTS:
        message = (
            f"backend {backend!r} refused the gateway's request ({error.upstream_code or error.kind.value}); "
            "this is a gateway configuration or account problem, not the caller's: contact its operators"
        )
    else:
        message = f"backend {backend!r}: {error.message}"
    details: list[object] = []
    if error.kind is Kind.INVALID_REQUEST:
        field = error.field or "image"
        details.append(_bad_request([FieldViolation(field, error.message, mapping.reason)]))
    if error.kind is Kind.QUOTA_EXHAUSTED:
        details.append(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=f"backend:{backend}", description=error.message
                    )
                ]
            )
        )
    retry_delay = error.retry_after if error.retry_after is not None else mapping.retry_delay
    if retry_delay is not None:
        details.append(_retry_info(retry_delay))
    return _status(mapping.code, message, mapping.reason, metadata, *details)


def internal_status() -> status_pb2.Status:
    return _status(grpc.StatusCode.INTERNAL, "internal error in the moderation gateway", "INTERNAL_ERROR", {})


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo every gateway status carries."""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


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
        )
    return _status(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        f"the stream sent nothing for {idle_timeout:g} s with no item in flight; it was closed",
        "STREAM_IDLE",
        metadata,
    )


def unauthenticated_status() -> status_pb2.Status:
    return _status(
        grpc.StatusCode.UNAUTHENTICATED,
        "send `authorization: Bearer <token>` metadata with a token the gateway's operators gave you",
        "CALLER_UNAUTHENTICATED",
        {},
    )
