"""TC3-HMAC-SHA256 against the vectors computed with the official SDK's own signing code."""

from __future__ import annotations

import pytest

from backends.http import Body
from backends.tencent import signing
from backends.tencent.auth import Credentials, Outgoing, TC3Auth
from tests.unit.tc3_vectors import (
    AUTHORIZATION_A,
    BODY_A,
    BODY_C,
    CANONICAL_A,
    CANONICAL_HASH_C,
    DATE,
    HOST,
    NEGATIVE_VARIANTS,
    PAYLOAD_HASH_C,
    SCOPE,
    SECRET_ID,
    SECRET_KEY,
    SIGNATURE_C,
    SIGNING_KEY_HEX,
    STRING_TO_SIGN_A,
    TIMESTAMP,
)


def test_vector_a_intermediate_values() -> None:
    assert len(BODY_A) == 97
    canonical = signing.canonical_request(host=HOST, content_type="application/json", body=BODY_A)
    assert canonical == CANONICAL_A
    assert signing.string_to_sign(timestamp=TIMESTAMP, service="ims", canonical=canonical) == STRING_TO_SIGN_A
    key = signing.signing_key(secret_key=SECRET_KEY, date=DATE, service="ims")
    assert key.hex() == SIGNING_KEY_HEX


def test_vector_a_authorization() -> None:
    assert (
        signing.authorization(
            secret_id=SECRET_ID,
            secret_key=SECRET_KEY,
            timestamp=TIMESTAMP,
            service="ims",
            host=HOST,
            content_type="application/json",
            body=BODY_A,
        )
        == AUTHORIZATION_A
    )


def test_vector_c_compact_body() -> None:
    canonical = signing.canonical_request(host=HOST, content_type="application/json", body=BODY_C)
    assert canonical.endswith(PAYLOAD_HASH_C)
    assert signing.string_to_sign(timestamp=TIMESTAMP, service="ims", canonical=canonical).endswith(
        CANONICAL_HASH_C
    )
    sig = signing.signature(secret_key=SECRET_KEY, timestamp=TIMESTAMP, service="ims", canonical=canonical)
    assert sig == SIGNATURE_C


@pytest.mark.parametrize(("host", "content_type", "expected"), NEGATIVE_VARIANTS)
def test_negative_variants_change_the_signature(host: str, content_type: str, expected: str) -> None:
    canonical = signing.canonical_request(host=host, content_type=content_type, body=BODY_A)
    sig = signing.signature(secret_key=SECRET_KEY, timestamp=TIMESTAMP, service="ims", canonical=canonical)
    assert sig == expected


def test_date_is_utc_not_beijing_time() -> None:
    # 22:13 UTC is already the next day in UTC+8; the vector with the UTC+8 date signs differently.
    assert signing.utc_date(TIMESTAMP) == DATE
    assert signing.credential_scope(TIMESTAMP, "ims") == SCOPE


def _signed(body: bytes | Body, credentials: Credentials) -> dict[str, str]:
    auth = TC3Auth(credentials, service="ims", clock=lambda: TIMESTAMP + 0.9)
    return auth.headers(Outgoing(host=HOST, path="/", content_type="application/json", body=body))


def test_auth_signs_the_bytes_sent_and_sets_the_timestamp() -> None:
    headers = _signed(BODY_A, Credentials(SECRET_ID, SECRET_KEY))
    assert headers == {"Authorization": AUTHORIZATION_A, "X-TC-Timestamp": "1700000000"}


def test_a_body_signed_as_its_parts_signs_as_its_bytes() -> None:
    # An image's body is hashed part by part, never joined: the published vector holds all the same.
    parts = Body(BODY_A[:5], BODY_A[5:-1], BODY_A[-1:])
    headers = _signed(parts, Credentials(SECRET_ID, SECRET_KEY))
    assert headers["Authorization"] == AUTHORIZATION_A


def test_vector_b_token_is_sent_but_not_signed() -> None:
    headers = _signed(BODY_A, Credentials(SECRET_ID, SECRET_KEY, token="EXAMPLETOKEN"))
    assert headers["X-TC-Token"] == "EXAMPLETOKEN"
    assert headers["Authorization"] == AUTHORIZATION_A


def test_credentials_repr_hides_secrets() -> None:
    text = repr(Credentials(SECRET_ID, SECRET_KEY, token="EXAMPLETOKEN"))
    assert SECRET_KEY not in text
    assert "EXAMPLETOKEN" not in text
