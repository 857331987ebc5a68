"""TC3-HMAC-SHA256 test vectors, computed with the official SDK's own signing code.

One copy, run against both implementations: the gateway's signer (test_signing.py) and the
emulator's verifier (test_emulator_tc3.py).
"""

from __future__ import annotations

SECRET_ID = "AKIDEXAMPLEEXAMPLEEXAMPLEEXAMPLE1234"
SECRET_KEY = "EXAMPLEKEYexamplekeyEXAMPLEKEY12"
TIMESTAMP = 1700000000
# 22:13 UTC: already the next day in UTC+8, so a scope dated in Beijing time signs differently.
DATE = "2023-11-14"
SCOPE = "2023-11-14/ims/tc3_request"
HOST = "ims.tencentcloudapi.com"
CONTENT_TYPE = "application/json"
BODY_A = b'{"BizType": "TencentCloudDefault", "DataId": "test-0001", "FileUrl": "https://example.com/a.jpg"}'
BODY_C = b'{"BizType":"TencentCloudDefault","DataId":"test-0001","FileContent":"aGVsbG8gd29ybGQ="}'

CANONICAL_A = (
    "POST\n/\n\ncontent-type:application/json\nhost:ims.tencentcloudapi.com\n\ncontent-type;host\n"
    "e9995bd9d548840c97f60ea8cfde982e0ac50641323dc461292baee0c83636ce"
)
STRING_TO_SIGN_A = (
    "TC3-HMAC-SHA256\n1700000000\n2023-11-14/ims/tc3_request\n"
    "f5ae39834eef8a7074caff50444c09d3f4e5b6cebdda1539d78b9494281feafc"
)
SIGNING_KEY_HEX = "01e28290eaf0fb488352a6d2b9788f48c60a1b4dbe81fc5daa867e50892c5567"
SIGNATURE_A = "6b45869095769179065af84b968c24d519f311bc0299a2232854580a937014a1"
AUTHORIZATION_A = (
    "TC3-HMAC-SHA256 Credential=AKIDEXAMPLEEXAMPLEEXAMPLEEXAMPLE1234/2023-11-14/ims/tc3_request, "
    "SignedHeaders=content-type;host, "
    f"Signature={SIGNATURE_A}"
)

PAYLOAD_HASH_C = "31acca85eb26d22e46577233bea0144bf75c86926477e29e66e68116920e97bc"
CANONICAL_HASH_C = "9ae4d41346515cad61619267a962d9ff9d747036b391749efcc94d69c506f2e3"
SIGNATURE_C = "2c32598d3a714399a02006794d7da4663a0cd08df8ba95a52f7234fcda00263c"

# (host, content type, signature of BODY_A): one signed header changed changes the signature.
NEGATIVE_VARIANTS = [
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
]
