"""Verifies the gateway's task callbacks (Standard Webhooks v1), with the standard library only.

    from moderation_client.webhooks import verify_callback
    event = verify_callback(body, request_headers, "whsec_...")   # or several secrets, while rotating

A callback is genuine when one of its `v1` signatures is the HMAC-SHA256, under one of your secrets,
of `webhook-id.webhook-timestamp.body`, and its timestamp is within `tolerance` seconds of now (an old
callback replayed is refused). `webhook-id` is the task id, the same on every retry: deduplicate on it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["CallbackVerificationError", "verify_callback"]

PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300.0


class CallbackVerificationError(Exception):
    """The callback is not signed by any of the secrets, or too old or too new to accept."""


def verify_callback(
    body: bytes,
    headers: Mapping[str, str],
    secrets: str | Iterable[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> dict[str, Any]:
    """The callback's JSON (`type`, `timestamp`, `data`) once verified; CallbackVerificationError if not."""
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        message_id = lowered["webhook-id"]
        timestamp = int(lowered["webhook-timestamp"])
        signatures = lowered["webhook-signature"].split()
    except (KeyError, ValueError):
        raise CallbackVerificationError("missing or malformed webhook headers") from None
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        raise CallbackVerificationError("the callback's timestamp is outside the tolerance")
    signed = f"{message_id}.{timestamp}.".encode() + body
    given = {s.partition(",")[2] for s in signatures if s.startswith("v1,")}
    for secret in [secrets] if isinstance(secrets, str) else secrets:
        expected = base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode()
        if any(hmac.compare_digest(expected, signature) for signature in given):
            parsed: dict[str, Any] = json.loads(body)
            return parsed
    raise CallbackVerificationError("no signature matches any of the secrets")


def _key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except binascii.Error:
        raise ValueError(f"a webhook secret is {PREFIX} followed by base64") from None
