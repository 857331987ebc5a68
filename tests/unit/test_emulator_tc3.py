"""The emulator's own TC3-HMAC-SHA256 verifier against the same published vectors as the gateway's signer."""

from __future__ import annotations

from email.message import Message

import pytest

from emulator import auth, tc3
from emulator.config import EmulatorConfig
from emulator.errors import ImsError
from tests.unit import tc3_vectors as vectors


def _canonical(body: bytes, *, host: str = vectors.HOST, content_type: str = vectors.CONTENT_TYPE) -> str:
    return tc3.canonical_request(
        method="POST",
        uri="/",
        query="",
        headers=[("content-type", content_type), ("host", host)],
        payload=body,
    )


def _string_to_sign(canonical: str) -> str:
    return tc3.string_to_sign(timestamp=vectors.TIMESTAMP, scope=vectors.SCOPE, canonical=canonical)


def _key() -> bytes:
    return tc3.derived_key(secret_key=vectors.SECRET_KEY, date=vectors.DATE, service="ims")


def _signature(canonical: str) -> str:
    return tc3.signature(key=_key(), to_sign=_string_to_sign(canonical))


def test_vector_a_intermediate_values() -> None:
    canonical = _canonical(vectors.BODY_A)
    assert canonical == vectors.CANONICAL_A
    assert _string_to_sign(canonical) == vectors.STRING_TO_SIGN_A
    assert _key().hex() == vectors.SIGNING_KEY_HEX
    assert _signature(canonical) == vectors.SIGNATURE_A


def test_vector_c_compact_body() -> None:
    canonical = _canonical(vectors.BODY_C)
    assert canonical.endswith(vectors.PAYLOAD_HASH_C)
    assert _string_to_sign(canonical).endswith(vectors.CANONICAL_HASH_C)
    assert _signature(canonical) == vectors.SIGNATURE_C


@pytest.mark.parametrize(("host", "content_type", "expected"), vectors.NEGATIVE_VARIANTS)
def test_negative_variants_change_the_signature(host: str, content_type: str, expected: str) -> None:
    assert _signature(_canonical(vectors.BODY_A, host=host, content_type=content_type)) == expected


def test_date_is_utc_not_beijing_time() -> None:
    assert tc3.utc_date(vectors.TIMESTAMP) == vectors.DATE
    assert tc3.credential_scope(tc3.utc_date(vectors.TIMESTAMP), "ims") == vectors.SCOPE


def test_header_names_and_values_are_lowercased_and_trimmed() -> None:
    # The published rule; the SDKs send lowercase values, so only this pins it.
    headers = [("Content-Type", " Application/JSON "), ("HOST", "IMS.TencentCloudAPI.com")]
    canonical = tc3.canonical_request(
        method="POST", uri="/", query="", headers=headers, payload=vectors.BODY_A
    )
    assert canonical == vectors.CANONICAL_A


# --- the verifier, over the vector's request ------------------------------------------------------


def _request(**overrides: str) -> Message:
    headers = Message()
    fields = {
        "Host": vectors.HOST,
        "Content-Type": vectors.CONTENT_TYPE,
        "X-TC-Timestamp": str(vectors.TIMESTAMP),
        "Authorization": vectors.AUTHORIZATION_A,
        **overrides,
    }
    for name, value in fields.items():
        headers[name] = value
    return headers


def _verify(headers: Message, body: bytes = vectors.BODY_A) -> str:
    config = EmulatorConfig(secret_id=vectors.SECRET_ID, secret_key=vectors.SECRET_KEY)
    return auth.verify(headers, body=body, path="/", config=config, now=vectors.TIMESTAMP + 0.9)


def test_verifier_accepts_the_vector_a_request() -> None:
    assert _verify(_request()) == vectors.SECRET_ID


@pytest.mark.parametrize(
    "request_headers",
    [
        _request(
            Authorization=vectors.AUTHORIZATION_A.replace(vectors.SIGNATURE_A, vectors.SIGNATURE_A[:-1] + "0")
        ),
        _request(Host="ims.ap-guangzhou.tencentcloudapi.com"),
        _request(**{"Content-Type": "application/json; charset=utf-8"}),
    ],
    ids=["signature", "host", "content-type"],
)
def test_verifier_refuses_a_changed_request(request_headers: Message) -> None:
    with pytest.raises(ImsError) as refused:
        _verify(request_headers)
    assert refused.value.code == "AuthFailure.SignatureFailure"


def test_verifier_refuses_a_changed_body() -> None:
    with pytest.raises(ImsError) as refused:
        _verify(_request(), body=vectors.BODY_C)
    assert refused.value.code == "AuthFailure.SignatureFailure"


def _signed_with_action(action: str) -> Message:
    """Vector A's request, signing x-tc-action as well, as the published example does."""
    canonical = tc3.canonical_request(
        method="POST",
        uri="/",
        query="",
        headers=[("content-type", vectors.CONTENT_TYPE), ("host", vectors.HOST), ("x-tc-action", action)],
        payload=vectors.BODY_A,
    )
    authorization = (
        f"{tc3.ALGORITHM} Credential={vectors.SECRET_ID}/{vectors.SCOPE}, "
        f"SignedHeaders=content-type;host;x-tc-action, Signature={_signature(canonical)}"
    )
    return _request(Authorization=authorization, **{"X-TC-Action": "ImageModeration"})


def test_verifier_checks_every_signed_header() -> None:
    assert _verify(_signed_with_action("imagemoderation")) == vectors.SECRET_ID
    with pytest.raises(ImsError) as refused:
        _verify(_signed_with_action("describeinstances"))
    assert refused.value.code == "AuthFailure.SignatureFailure"


def test_verifier_requires_content_type_and_host_to_be_signed() -> None:
    authorization = vectors.AUTHORIZATION_A.replace("SignedHeaders=content-type;host", "SignedHeaders=host")
    with pytest.raises(ImsError) as refused:
        _verify(_request(Authorization=authorization))
    assert refused.value.code == "AuthFailure.InvalidAuthorization"
