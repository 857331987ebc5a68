"""The errors reference: one row per failure kind from `service.errors.KIND_POLICIES` (code, reason,
retried, failover, circuit), and the gateway's own refusals, each with when it happens."""

from __future__ import annotations

from backends.errors import Kind
from service.errors import KIND_POLICIES, REASON_OPTIONS

__all__ = ["GATEWAY_REASONS", "WHEN", "backend_errors", "gateway_errors"]

# When each kind happens: the one thing its row cannot say. A new Kind without an entry fails the docs
# build's drift test.
WHEN: dict[Kind, str] = {
    Kind.INVALID_REQUEST: (
        "IMS refused the image or a parameter (`InvalidParameter*`, `InvalidParameterValue*`, "
        "`MissingParameter`, `RequestSizeLimitExceeded`, `ResourceUnavailable.InvalidImageContent`)"
    ),
    Kind.IMAGE_DOWNLOAD_FAILED: (
        "IMS (or the local backend) could not download `url` (it already retried once)"
    ),
    Kind.RATE_LIMITED: "`RequestLimitExceeded*` on every attempt; `RetryInfo` says when to retry",
    Kind.QUOTA_EXHAUSTED: "`LimitExceeded`, `ResourceInsufficient`, `ResourcesSoldOut`; `QuotaFailure`",
    Kind.MISCONFIGURED: (
        "the **gateway's** keys, clock, region or network identity were refused (`AuthFailure.*`, "
        "`UnsupportedRegion`, `IpNotInWhitelist`, ...). Never reported as the caller's `UNAUTHENTICATED`."
    ),
    Kind.ACCOUNT_UNAVAILABLE: (
        "the gateway's Tencent account cannot serve: not activated, no package, arrears "
        "(`UnauthorizedOperation*`)"
    ),
    Kind.UNAVAILABLE: (
        "transient faults on every attempt: `ModelCallFailed`, `InternalError*`, `ServiceUnavailable`, "
        "network errors, HTTP 5xx, unreadable responses (`upstream_code` `MalformedResponse`: not JSON, "
        "no verdict, nested over 32 levels, over 1 MiB); `RetryInfo`"
    ),
    Kind.TIMEOUT: (
        "no answer before the caller's deadline or the 15 s backend timeout (the message says which)"
    ),
    Kind.FAILED: "other refusals (`FailedOperation`, `OperationDenied`, ...)",
    Kind.THROTTLED: (
        "the gateway's rate governor had no slot before the call's deadline; nothing was sent; `RetryInfo`"
    ),
    Kind.OVERLOADED: (
        "the embedded backend had no room (its decoded-image memory budget or a fair share of its workers) "
        "for the image before the deadline; nothing was analysed; `RetryInfo`"
    ),
    Kind.CALLER_QUOTA_EXHAUSTED: (
        "the caller's hard quota (the routing file's `[quotas]`) is used up; nothing was sent; "
        "`QuotaFailure` names the quota and its limit, `RetryInfo` waits until its period ends"
    ),
    Kind.QUOTA_UNAVAILABLE: (
        "the fleet's quota counts (Redis) cannot be reached and `MODERATION_QUOTA_REDIS_FAILURE` is "
        "`fail-closed`; nothing was sent; `RetryInfo`"
    ),
    Kind.OUTCOME_IN_DOUBT: (
        "(a task's error) the replica running the task stopped while its IMS call was in flight: that "
        "call may have been billed and its answer is lost, so it was not sent again (unless "
        "`MODERATION_TASK_RESEND_IN_DOUBT`); submit again with a new idempotency key to pay for another"
    ),
}

# The gateway's own refusals, before or beside any backend: (gRPC code, reasons, when). The drift test
# checks that each reason is still raised somewhere in service/.
GATEWAY_REASONS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "INVALID_ARGUMENT",
        (
            "IMAGE_MISSING",
            "IMAGE_TOO_SMALL",
            "IMAGE_TOO_LARGE",
            "IMAGE_UNSUPPORTED",
            "IMAGE_UNDECODABLE",
            "IMAGE_DIMENSIONS_OUT_OF_RANGE",
            "IMAGE_ASPECT_RATIO_TOO_LARGE",
            "TOO_MANY_TILES",
            "INVALID_URL",
            "INVALID_DATA_ID",
            "INVALID_BIZ_TYPE",
            "INVALID_FRAME_SAMPLING",
            "INVALID_MAX_TILES",
            "INVALID_USER",
            "INVALID_DEVICE",
        ),
        "the gateway's own checks failed (reason of the first violation; all are in `BadRequest`); "
        "no backend call was made",
    ),
    ("INVALID_ARGUMENT", ("BATCH_TOO_LARGE",), "`BatchModerateImages` with more than 1000 items"),
    (
        "UNAUTHENTICATED",
        ("CALLER_UNAUTHENTICATED",),
        "caller authentication is on and the call had no valid bearer token",
    ),
    (
        "UNAVAILABLE",
        ("SERVER_DRAINING",),
        "(ends a stream) the gateway is shutting down; every item read was answered, `items_read` says how "
        "many; resend the rest elsewhere",
    ),
    (
        "DEADLINE_EXCEEDED",
        ("STREAM_IDLE",),
        "(ends a stream) it sent nothing for `MODERATION_STREAM_IDLE_TIMEOUT` with no item in flight",
    ),
    (
        "INVALID_ARGUMENT",
        ("UNDECODABLE_REQUEST",),
        "the request bytes are not a valid protobuf message of the method's request type (any method; "
        "`BadRequest` names `request`). On a stream, every message before the bad one is answered, the rest "
        "are dropped, and the message says how many were answered.",
    ),
    (
        "RESOURCE_EXHAUSTED",
        ("SERVER_OVER_CAPACITY",),
        "more than `MODERATION_MAX_CONCURRENT_RPCS` moderation calls at once; refused on arrival, "
        "nothing was read; `RetryInfo`; metadata `limit`",
    ),
    (
        "RESOURCE_EXHAUSTED",
        ("CALLER_OVER_CAPACITY",),
        "the caller already runs `MODERATION_CALLER_MAX_IN_FLIGHT` calls; refused on arrival; `RetryInfo`; "
        "metadata `limit`",
    ),
    ("INTERNAL", ("INTERNAL_ERROR",), "a bug in the gateway (logged with its traceback)"),
    (
        "INVALID_ARGUMENT",
        ("CALLBACK_URL_REFUSED", "IDEMPOTENCY_KEY_INVALID"),
        "`SubmitModeration`: the callback URL is not one the gateway may call (https unless "
        "`MODERATION_CALLBACK_ALLOW_HTTP`; public addresses unless allowed), or the idempotency key is not "
        "at most 64 of `[A-Za-z0-9_.:-]`; the request's own fields are checked as `ModerateImage` "
        "checks them",
    ),
    (
        "INVALID_ARGUMENT",
        ("TASK_ID_INVALID",),
        "`GetModerationTask` without a task id, or with an overlong one",
    ),
    ("NOT_FOUND", ("TASK_NOT_FOUND",), "no such task (or another caller's)"),
    ("NOT_FOUND", ("TASK_EXPIRED",), "the task finished longer ago than `MODERATION_TASK_RETENTION`"),
    (
        "DEADLINE_EXCEEDED",
        ("TASK_DEADLINE_EXCEEDED",),
        "(a task's error) its `MODERATION_TASK_DEADLINE` passed before the backend's budget had a slot "
        "for it",
    ),
    (
        "UNAVAILABLE",
        ("TASK_STORE_UNAVAILABLE",),
        "the task store (Redis in fleet mode) cannot be reached; nothing was stored; retry later",
    ),
)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def backend_errors() -> str:
    rows = [
        "| gRPC code | `reason` | when | retried by the gateway | fails over | circuit | billed "
        "| the client may retry |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, row in KIND_POLICIES.items():
        rows.append(
            f"| `{row.code.name}` | `{row.reason}` | {WHEN[kind]} | {_yes(row.retried)} | "
            f"{_yes(row.fails_over)} | {row.circuit.value} | {_yes(row.billed)} | "
            f"{_yes(row.client_retries)} |"
        )
    return "\n".join(rows)


def gateway_errors() -> str:
    rows = [
        "| gRPC code | `reason` | when | retried by the gateway | the client may retry |",
        "|---|---|---|---|---|",
    ]
    for code, reasons, when in GATEWAY_REASONS:
        retried = "—" if when.startswith("(ends a stream)") else "no"
        # One answer for a group whose reasons agree (they all do today), else one per reason.
        answers = [_yes(REASON_OPTIONS[r].retryable) for r in reasons]
        client = answers[0] if len(set(answers)) == 1 else ", ".join(answers)
        rows.append(f"| `{code}` | {', '.join(f'`{r}`' for r in reasons)} | {when} | {retried} | {client} |")
    rows.append(
        "| `RESOURCE_EXHAUSTED` | (none) | a message over the ~11.5 MiB receive limit, or, as a backstop "
        "only, "
        "more than twice `MODERATION_MAX_CONCURRENT_RPCS` calls of any kind at once (gRPC's own statuses) "
        "| — | no |"
    )
    return "\n".join(rows)
