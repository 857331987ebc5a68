"""The one exception type backends raise, classified by kind.

Backends translate whatever their upstream says into a `BackendError` with a `Kind`; everything the
gateway decides from a kind (status code, retry, failover, circuit) is one row of the table in
`service/errors.py`, which backends never import (they know nothing of gRPC).
Messages must be safe to show callers: never a secret, never image bytes.
"""

from __future__ import annotations

import enum
from typing import Final

from common.scrub import CODE, REQUEST_ID, bounded_token


class Kind(enum.Enum):
    """What went wrong, in terms a caller or an operator can act on."""

    # The image or a parameter was refused by the backend; the caller must change the request.
    INVALID_REQUEST = "invalid_request"
    # The backend could not download the image URL (it has already retried once).
    IMAGE_DOWNLOAD_FAILED = "image_download_failed"
    # Too many requests per second for the backend account: waiting helps.
    RATE_LIMITED = "rate_limited"
    # A quota or resource package is used up: waiting does not help soon.
    QUOTA_EXHAUSTED = "quota_exhausted"
    # The gateway's own credentials, region or protocol settings are wrong (an operator's problem,
    # never reported as the caller's authentication failure).
    MISCONFIGURED = "misconfigured"
    # The backend account cannot serve: service not activated, no package, arrears.
    ACCOUNT_UNAVAILABLE = "account_unavailable"
    # A transient backend or network fault: retrying may succeed.
    UNAVAILABLE = "unavailable"
    # The backend did not answer within the time left.
    TIMEOUT = "timeout"
    # The backend refused for a reason retrying will not change and the caller cannot fix.
    FAILED = "failed"
    # The gateway's own rate governor had no slot for the call before its deadline; nothing was sent.
    THROTTLED = "throttled"
    # An in-process backend had no room (memory or work budget) for the image before the deadline;
    # nothing was analysed. Another backend, or the same one a moment later, may have room.
    OVERLOADED = "overloaded"
    # The caller's own hard quota of billed calls (the routing file's `[quotas]`) is used up until its
    # period ends; nothing was sent.
    CALLER_QUOTA_EXHAUSTED = "caller_quota_exhausted"
    # The fleet's quota counts (Redis) cannot be reached and the quota mode is fail-closed; nothing was sent.
    QUOTA_UNAVAILABLE = "quota_unavailable"
    # An asynchronous task taken over from a replica that stopped while the task's backend call was in
    # flight: that call may have been billed, and its answer died with the replica (IMS cannot be asked
    # for it again), so the gateway does not send another; nothing was sent.
    OUTCOME_IN_DOUBT = "outcome_in_doubt"


class BackendError(Exception):
    """A classified backend failure.

    `upstream_code` and `request_id` are the backend's own words (e.g. an IMS error code and its
    RequestId), kept for operators and support tickets; each becomes `unrecognised` unless it matches
    its grammar, as both end up in answers, spans and metric labels; `retry_after` is set when the
    backend said how long to wait. Built once and never changed: the retrier and the router report
    what happened around it (which backend, how many attempts) in a `service.errors.CallFailure`.
    """

    def __init__(
        self,
        kind: Kind,
        message: str,
        *,
        upstream_code: str = "",
        request_id: str = "",
        retry_after: float | None = None,
        field: str = "",
    ) -> None:
        super().__init__(message)
        self.kind: Final = kind
        self.message: Final = message
        self.upstream_code: Final = bounded_token(upstream_code, CODE)
        self.request_id: Final = bounded_token(request_id, REQUEST_ID)
        self.retry_after: Final = retry_after
        # For INVALID_REQUEST: the request field to fix, when the backend said which.
        self.field: Final = field

    def __repr__(self) -> str:
        return (
            f"BackendError({self.kind.name}, {self.message!r}, upstream_code={self.upstream_code!r}, "
            f"request_id={self.request_id!r})"
        )
