"""TC3-HMAC-SHA256, the request signature of Tencent Cloud API 3.0.

Pure functions over bytes and strings, so the same code signs in the adapter and verifies in the test
emulator, and the published test vectors pin it byte for byte. Only `content-type` and `host` are
signed; the body is hashed exactly as sent.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Iterable
from datetime import UTC, datetime

ALGORITHM = "TC3-HMAC-SHA256"
SIGNED_HEADERS = "content-type;host"
# Unix time has no leap seconds: every UTC day is this long.
SECONDS_PER_DAY = 86_400


def utc_date(timestamp: int) -> str:
    """The credential-scope date: the UTC calendar date of the timestamp (never local time)."""
    return _utc_day(timestamp // SECONDS_PER_DAY)


@functools.lru_cache(maxsize=4)
def _utc_day(day: int) -> str:
    # Formatting a date costs more than the rest of the signature's strings: once per day will do.
    return datetime.fromtimestamp(day * SECONDS_PER_DAY, tz=UTC).strftime("%Y-%m-%d")


def credential_scope(timestamp: int, service: str) -> str:
    return f"{utc_date(timestamp)}/{service}/tc3_request"


def payload_hash(body: bytes | Iterable[bytes]) -> str:
    """The body's SHA-256: of its bytes, or of its parts in order (a large body is never joined)."""
    if isinstance(body, bytes):
        return hashlib.sha256(body).hexdigest()
    digest = hashlib.sha256()
    for part in body:
        digest.update(part)
    return digest.hexdigest()


def canonical_request(*, host: str, content_type: str, body: bytes | Iterable[bytes], path: str = "/") -> str:
    hashed = payload_hash(body)
    canonical_headers = f"content-type:{content_type}\nhost:{host}\n"
    # POST carries its parameters in the body, so the canonical query string is empty.
    return f"POST\n{path}\n\n{canonical_headers}\n{SIGNED_HEADERS}\n{hashed}"


def string_to_sign(*, timestamp: int, service: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{credential_scope(timestamp, service)}\n{digest}"


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


# The key signs every request of a day with the same credentials: derived once (three HMACs) for each.
# A handful covers a day's change and a rotation or two; it is held in memory only, as the secret is.
@functools.lru_cache(maxsize=8)
def signing_key(*, secret_key: str, date: str, service: str) -> bytes:
    k_date = _hmac(("TC3" + secret_key).encode(), date)
    k_service = _hmac(k_date, service)
    return _hmac(k_service, "tc3_request")


def signature(*, secret_key: str, timestamp: int, service: str, canonical: str) -> str:
    key = signing_key(secret_key=secret_key, date=utc_date(timestamp), service=service)
    to_sign = string_to_sign(timestamp=timestamp, service=service, canonical=canonical)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def authorization(
    *,
    secret_id: str,
    secret_key: str,
    timestamp: int,
    service: str,
    host: str,
    content_type: str,
    body: bytes | Iterable[bytes],
    path: str = "/",
) -> str:
    """The `Authorization` header value for one request."""
    canonical = canonical_request(host=host, content_type=content_type, body=body, path=path)
    sig = signature(secret_key=secret_key, timestamp=timestamp, service=service, canonical=canonical)
    return (
        f"{ALGORITHM} Credential={secret_id}/{credential_scope(timestamp, service)}, "
        f"SignedHeaders={SIGNED_HEADERS}, Signature={sig}"
    )
