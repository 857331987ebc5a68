"""TC3-HMAC-SHA256 against the vectors computed with the official SDK's own signing code."""

from __future__ import annotations

import httpx
import pytest

from backends.tencent import signing
from backends.tencent.auth import Credentials, TC3Auth

SECRET_ID = "AKIDEXAMPLEEXAMPLEEXAMPLEEXAMPLE1234"
SECRET_KEY = "EXAMPLEKEYexamplekeyEXAMPLEKEY12"
TIMESTAMP = 1700000000
HOST = "ims.tencentcloudapi.com"
BODY_A = b'{"BizType": "TencentCloudDefault", "DataId": "test-0001", "FileUrl": "https://example.com/a.jpg"}'
BODY_C = b'{"BizType":"TencentCloudDefault","DataId":"test-0001","FileContent":"aGVsbG8gd29ybGQ="}'
AUTHORIZATION_A = (
    "TC3-HMAC-SHA256 Credential=AKIDEXAMPLEEXAMPLEEXAMPLEEXAMPLE1234/2023-11-14/ims/tc3_request, "
    "SignedHeaders=content-type;host, "
    "Signature=6b45869095769179065af84b968c24d519f311bc0299a2232854580a937014a1"
)


def test_vector_a_intermediate_values() -> None:
    assert len(BODY_A) == 97
    canonical = signing.canonical_request(host=HOST, content_type="application/json", body=BODY_A)
    assert canonical == (
        "POST\n/\n\ncontent-type:application/json\nhost:ims.tencentcloudapi.com\n\ncontent-type;host\n"
        "e9995bd9d548840c97f60ea8cfde982e0ac50641323dc461292baee0c83636ce"
    )
    assert signing.string_to_sign(timestamp=TIMESTAMP, service="ims", canonical=canonical) == (
        "TC3-HMAC-SHA256\n1700000000\n2023-11-14/ims/tc3_request\n"
        "f5ae39834eef8a7074caff50444c09d3f4e5b6cebdda1539d78b9494281feafc"
    )
    key = signing.signing_key(secret_key=SECRET_KEY, date="2023-11-14", service="ims")
    assert key.hex() == "01e28290eaf0fb488352a6d2b9788f48c60a1b4dbe81fc5daa867e50892c5567"


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
    assert canonical.endswith("31acca85eb26d22e46577233bea0144bf75c86926477e29e66e68116920e97bc")
    assert signing.string_to_sign(timestamp=TIMESTAMP, service="ims", canonical=canonical).endswith(
        "9ae4d41346515cad61619267a962d9ff9d747036b391749efcc94d69c506f2e3"
    )
    sig = signing.signature(secret_key=SECRET_KEY, timestamp=TIMESTAMP, service="ims", canonical=canonical)
    assert sig == "2c32598d3a714399a02006794d7da4663a0cd08df8ba95a52f7234fcda00263c"


@pytest.mark.parametrize(
    ("host", "content_type", "expected"),
    [
        (
            "ims.ap-guangzhou.tencentcloudapi.com",
            "application/json",
            "2da61a4d908b3ab87a67c8c3326b2d5ee52f12554271e59b430538353cb71966",
        ),
        (
            HOST,
            "application/json; charset=utf-8",
            "7cd8a89085ad2f06396982f1beedfdaad73549c52c0ee8db5e504703001f9a41",
        ),
    ],
)
def test_negative_variants_change_the_signature(host: str, content_type: str, expected: str) -> None:
    canonical = signing.canonical_request(host=host, content_type=content_type, body=BODY_A)
    sig = signing.signature(secret_key=SECRET_KEY, timestamp=TIMESTAMP, service="ims", canonical=canonical)
    assert sig == expected


def test_date_is_utc_not_beijing_time() -> None:
    # 22:13 UTC is already the next day in UTC+8; the vector with the UTC+8 date signs differently.
    assert signing.utc_date(TIMESTAMP) == "2023-11-14"
    assert signing.credential_scope(TIMESTAMP, "ims") == "2023-11-14/ims/tc3_request"


def _signed(body: bytes, credentials: Credentials) -> httpx.Request:
    auth = TC3Auth(credentials, service="ims", clock=lambda: TIMESTAMP + 0.9)
    request = httpx.Request(
        "POST", f"https://{HOST}/", content=body, headers={"Content-Type": "application/json"}
    )
    return next(auth.auth_flow(request))


def test_auth_signs_the_bytes_sent_and_sets_the_timestamp() -> None:
    request = _signed(BODY_A, Credentials(SECRET_ID, SECRET_KEY))
    assert request.headers["Authorization"] == AUTHORIZATION_A
    assert request.headers["X-TC-Timestamp"] == "1700000000"
    assert request.content == BODY_A
    assert "X-TC-Token" not in request.headers


def test_vector_b_token_is_sent_but_not_signed() -> None:
    request = _signed(BODY_A, Credentials(SECRET_ID, SECRET_KEY, token="EXAMPLETOKEN"))
    assert request.headers["X-TC-Token"] == "EXAMPLETOKEN"
    assert request.headers["Authorization"] == AUTHORIZATION_A


def test_credentials_repr_hides_secrets() -> None:
    text = repr(Credentials(SECRET_ID, SECRET_KEY, token="EXAMPLETOKEN"))
    assert SECRET_KEY not in text
    assert "EXAMPLETOKEN" not in text
