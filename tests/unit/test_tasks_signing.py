"""Our Standard Webhooks signatures against the `standardwebhooks` package (an independent
implementation), and the client's verifier against both."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from moderation_client.webhooks import CallbackVerificationError, verify_callback
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from service.tasks.signing import SecretError, WebhookSigner, parse_secrets

NEW = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD = "whsec_c2VjcmV0LWJlZm9yZS10aGUtcm90YXRpb24="
BODY = (
    b'{"type":"moderation.task.succeeded","timestamp":"2026-12-06T04:00:00Z",'
    b'"data":{"suggestion":"SUGGESTION_PASS"}}'
)


def test_each_active_secret_verifies_our_signature_with_the_standard_package() -> None:
    now = int(time.time())
    headers = WebhookSigner.of([NEW, OLD]).headers("tsk_1_a", now, BODY)
    for secret in (NEW, OLD):
        assert Webhook(secret).verify(BODY, headers) == {
            "type": "moderation.task.succeeded",
            "timestamp": "2026-12-06T04:00:00Z",
            "data": {"suggestion": "SUGGESTION_PASS"},
        }
    # The package's own signature is the one we compute.
    signed = Webhook(NEW).sign("tsk_1_a", datetime.fromtimestamp(now, tz=UTC), BODY)
    assert headers["webhook-signature"].split()[0] == signed


def test_a_tampered_body_or_an_unknown_secret_fails_verification() -> None:
    headers = WebhookSigner.of([NEW]).headers("tsk_1_a", int(time.time()), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(NEW).verify(BODY.replace(b"PASS", b"BLOCK"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD).verify(BODY, headers)


def test_the_client_verifies_ours_and_the_packages_and_refuses_forgeries_and_replays() -> None:
    now = int(time.time())
    ours = WebhookSigner.of([NEW]).headers("tsk_1_a", now, BODY)
    assert verify_callback(BODY, ours, [OLD, NEW])["type"] == "moderation.task.succeeded"
    theirs = {
        "Webhook-Id": "msg_1",
        "Webhook-Timestamp": str(now),
        "Webhook-Signature": Webhook(OLD).sign("msg_1", datetime.fromtimestamp(now, tz=UTC), BODY),
    }
    assert verify_callback(BODY, theirs, OLD)["data"] == {"suggestion": "SUGGESTION_PASS"}
    with pytest.raises(CallbackVerificationError):
        verify_callback(BODY + b" ", ours, NEW)
    with pytest.raises(CallbackVerificationError):
        verify_callback(BODY, ours, OLD)
    with pytest.raises(CallbackVerificationError):
        verify_callback(BODY, ours, NEW, now=now + 301)
    with pytest.raises(CallbackVerificationError):
        verify_callback(BODY, {}, NEW)


@pytest.mark.parametrize("bad", ["plaintext-key-1234", "whsec_not-base64!", "whsec_c2hvcnQ="])
def test_a_bad_secret_is_refused_without_being_quoted(bad: str) -> None:
    with pytest.raises(SecretError) as refused:
        parse_secrets(f"{NEW} {bad}")
    assert bad not in str(refused.value)
