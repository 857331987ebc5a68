"""TC3-HMAC-SHA256 as Tencent Cloud API 3.0 publishes it ("Signature v3"), from the verifier's side.

The emulator's own implementation, written from the published steps rather than shared with the
gateway, so that the emulator checks the gateway's signer instead of agreeing with it by construction.
The steps:

1. The canonical request: method, canonical URI, canonical query string (empty for POST), the
   canonical headers (each signed header as `name:value\\n`, name and value lowercased and trimmed, in
   the order of SignedHeaders), SignedHeaders, and the hex SHA-256 of the payload, joined by newlines.
2. The string to sign: the algorithm, the timestamp, the credential scope (`<UTC date>/<service>/
   tc3_request`) and the hex SHA-256 of the canonical request, joined by newlines.
3. The derived key: HMAC-SHA256 chained over the date, the service and `tc3_request`, starting from
   the key `"TC3" + SecretKey`.
4. The signature: the hex HMAC-SHA256 of the string to sign under the derived key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from datetime import UTC, datetime

__all__ = [
    "ALGORITHM",
    "TERMINATOR",
    "canonical_headers",
    "canonical_request",
    "credential_scope",
    "derived_key",
    "signature",
    "string_to_sign",
    "utc_date",
]

ALGORITHM = "TC3-HMAC-SHA256"
TERMINATOR = "tc3_request"


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac_sha256(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def utc_date(timestamp: int) -> str:
    """The scope's date is the UTC calendar date of X-TC-Timestamp, never the server's local date."""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d")


def credential_scope(date: str, service: str) -> str:
    return f"{date}/{service}/{TERMINATOR}"


def canonical_headers(headers: Sequence[tuple[str, str]]) -> str:
    """`headers` are the signed (name, value) pairs, in the order SignedHeaders lists them."""
    return "".join(f"{name.strip().lower()}:{value.strip().lower()}\n" for name, value in headers)


def canonical_request(
    *, method: str, uri: str, query: str, headers: Sequence[tuple[str, str]], payload: bytes
) -> str:
    signed_headers = ";".join(name.strip().lower() for name, _ in headers)
    return "\n".join((method, uri, query, canonical_headers(headers), signed_headers, _sha256_hex(payload)))


def string_to_sign(*, timestamp: int, scope: str, canonical: str) -> str:
    return "\n".join((ALGORITHM, str(timestamp), scope, _sha256_hex(canonical.encode())))


def derived_key(*, secret_key: str, date: str, service: str) -> bytes:
    key = ("TC3" + secret_key).encode()
    for part in (date, service, TERMINATOR):
        key = _hmac_sha256(key, part)
    return key


def signature(*, key: bytes, to_sign: str) -> str:
    return _hmac_sha256(key, to_sign).hex()
