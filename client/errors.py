"""`ModerationError`: a failed call or stream item, read once from the gateway's rich status."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "moderation-gateway"
# The gateway sent nothing upstream (its rate governor had no slot), so a retry is not billed twice.
RATE_BUDGET_EXHAUSTED = "RATE_BUDGET_EXHAUSTED"
# The gateway is shutting down: a stream ended with every item it read answered.
SERVER_DRAINING = "SERVER_DRAINING"
# The only reasons this client retries. BACKEND_RATE_LIMITED and BACKEND_UNAVAILABLE are not among
# them: the gateway already retried those, and every retry of theirs was a billed call.
RETRYABLE_REASONS = frozenset({RATE_BUDGET_EXHAUSTED, SERVER_DRAINING})

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
        """From a `google.rpc.Status`: a stream item's `error`, or a call's rich status."""
        info: error_details_pb2.ErrorInfo | None = None
        retry: error_details_pb2.RetryInfo | None = None
        for detail in status.details:
            if info is None and detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
            elif retry is None and detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
        return cls(
            _STATUS_CODES.get(status.code, grpc.StatusCode.UNKNOWN),
            status.message,
            reason=info.reason if info else None,
            domain=info.domain if info else None,
            metadata=dict(info.metadata) if info else None,
            retry_delay=retry.retry_delay.ToNanoseconds() / 1e9 if retry else None,
            status=status,
        )

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> ModerationError:
        """From a failed call of either the blocking or the asyncio API."""
        status = rpc_status.from_call(error)
        if status is None:
            # Statuses gRPC made itself (no connection, message too large) carry no details.
            return cls(error.code(), error.details() or "")
        return cls.from_status(status)


class ServerUnreachable(Exception):
    """Nothing answered at the client's target in time."""
