"""`ModerationError`: a failed call or stream item, read once from the gateway's rich status.

The status comes from a server this client does not control: details that do not decode, or that
contradict the status they ride on, are ignored, and the error is the bare status. Reading one never
raises anything but what it describes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from moderation.v1 import error_reasons_pb2

DOMAIN = "moderation-gateway"
# The gateway is shutting down: a stream ended with every item it read answered.
SERVER_DRAINING = "SERVER_DRAINING"
# The ErrorReason values' names start with it; ErrorInfo's reasons do not.
REASON_PREFIX = "ERROR_REASON_"


def _retryable_reasons() -> frozenset[str]:
    """The reasons the contract marks `(moderation.v1.reason).retryable` (error_reasons.proto)."""
    values = error_reasons_pb2.ErrorReason.DESCRIPTOR.values
    return frozenset(
        value.name.removeprefix(REASON_PREFIX)
        for value in values
        if value.GetOptions().Extensions[error_reasons_pb2.reason].retryable
    )


# The only reasons this client retries, as the contract marks them. BACKEND_RATE_LIMITED and
# BACKEND_UNAVAILABLE are not among them: the gateway already retried those, each retry a billed call.
RETRYABLE_REASONS = _retryable_reasons()
# Where gRPC carries a status's google.rpc.Status, details included (the gRPC over HTTP/2 spec).
STATUS_DETAILS_KEY = "grpc-status-details-bin"

Detail = TypeVar("Detail", error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo)

_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


class ModerationError(Exception):
    """A gRPC status from the gateway: its code, message and the `google.rpc.ErrorInfo` it carries.

    `reason` and `metadata` come from the ErrorInfo (None and empty for statuses gRPC itself made, such
    as an unreachable server); `retry_delay` from `google.rpc.RetryInfo`, in seconds, when waiting helps;
    `status` is the whole `google.rpc.Status`, for the other details (`BadRequest`, `QuotaFailure`).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str | None = None,
        domain: str | None = None,
        metadata: Mapping[str, str] | None = None,
        retry_delay: float | None = None,
        status: status_pb2.Status | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}" + (f" [{reason}]" if reason else ""))
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: Mapping[str, str] = MappingProxyType(dict(metadata or {}))
        self.retry_delay = retry_delay
        self.status = status

    @property
    def retryable(self) -> bool:
        """True when the gateway says a retry costs nothing upstream and may succeed."""
        return self.domain == DOMAIN and self.reason in RETRYABLE_REASONS

    @classmethod
    def from_status(cls, status: status_pb2.Status) -> ModerationError:
        """From a `google.rpc.Status`: a stream item's `error`, or a call's rich status.

        An error must not say OK: a status with code 0 (or a code gRPC does not define) is UNKNOWN.
        """
        code = _STATUS_CODES.get(status.code, grpc.StatusCode.UNKNOWN)
        if code is grpc.StatusCode.OK:
            code = grpc.StatusCode.UNKNOWN
        info = _unpack(status, error_details_pb2.ErrorInfo)
        retry = _unpack(status, error_details_pb2.RetryInfo)
        return cls(
            code,
            status.message,
            reason=info.reason if info else None,
            domain=info.domain if info else None,
            metadata=dict(info.metadata) if info else None,
            retry_delay=max(0.0, retry.retry_delay.ToNanoseconds() / 1e9) if retry else None,
            status=status,
        )

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> ModerationError:
        """From a failed call of either the blocking or the asyncio API."""
        code: grpc.StatusCode = error.code()
        message: str = error.details() or ""
        status = _rich_status(error.trailing_metadata() or ())
        # Details that name another status than the call's belong to no status of this call.
        if status is None or status.code != code.value[0] or code is grpc.StatusCode.OK:
            return cls(code, message)
        return cls.from_status(status)


def _rich_status(trailers: Iterable[tuple[str, str | bytes]]) -> status_pb2.Status | None:
    """The call's google.rpc.Status, or None when there is none or it does not decode."""
    for key, value in trailers:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None


def _unpack(status: status_pb2.Status, kind: type[Detail]) -> Detail | None:
    """The first detail of `kind` that decodes; any that do not are skipped."""
    for detail in status.details:
        if detail.Is(kind.DESCRIPTOR):
            message = kind()
            try:
                if detail.Unpack(message):
                    return message
            except DecodeError:
                continue
    return None


class ServerUnreachable(Exception):
    """Nothing answered at the client's target in time."""
