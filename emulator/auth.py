"""Request authentication: TC3-HMAC-SHA256 as Tencent does, or a private deployment's bearer token or none.

Verifying with `backends.tencent.signing` (rather than a second implementation) means the emulator
accepts exactly what that code produces; the official SDK tests in test_ims_emulator.py keep both
honest against the real algorithm.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

from backends.tencent import signing

from .config import EmulatorConfig
from .errors import ImsError
from .headers import Headers, required

SERVICE = "ims"
# Whom the rate limit counts a request against when it carries no SecretId.
BEARER_IDENTITY = "bearer"
ANONYMOUS_IDENTITY = "anonymous"
_TERMINATOR = "tc3_request"
# The SDK sends this value to sign the constant string instead of the body (ClientProfile.unsignedPayload).
_UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_AUTHORIZATION = re.compile(
    rf"{re.escape(signing.ALGORITHM)} Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed_headers>[^,\s]+),\s*Signature=(?P<signature>\S+)"
)


@dataclass(frozen=True)
class _Authorization:
    secret_id: str
    date: str
    service: str
    terminator: str
    signed_headers: frozenset[str]
    signature: str


def _parse_authorization(value: str | None) -> _Authorization:
    match = _AUTHORIZATION.fullmatch(value.strip()) if value else None
    credential = match["credential"].split("/") if match else []
    if match is None or len(credential) != 4:
        raise ImsError(
            "AuthFailure.InvalidAuthorization",
            "The Authorization header is missing or malformed: expected `TC3-HMAC-SHA256 Credential="
            "<SecretId>/<Date>/ims/tc3_request, SignedHeaders=content-type;host, Signature=<hex>`.",
        )
    secret_id, date, service, terminator = credential
    return _Authorization(
        secret_id=secret_id,
        date=date,
        service=service,
        terminator=terminator,
        signed_headers=frozenset(match["signed_headers"].lower().split(";")),
        signature=match["signature"],
    )


def _timestamp(headers: Headers) -> int:
    raw = required(headers, "X-TC-Timestamp")
    if not (raw.isascii() and raw.isdigit()):
        raise ImsError("InvalidParameter", f"X-TC-Timestamp `{raw}` is not a Unix time in seconds.")
    return int(raw)


def authenticate(headers: Headers, *, body: bytes, path: str, config: EmulatorConfig, now: float) -> str:
    """Check the request as `config.auth` says; return the identity its rate limit counts against."""
    if config.auth == "bearer":
        _verify_bearer(headers.get("Authorization"), config.bearer_token)
        return BEARER_IDENTITY
    if config.auth == "none":
        return ANONYMOUS_IDENTITY
    return verify(headers, body=body, path=path, config=config, now=now)


def _verify_bearer(value: str | None, expected: str) -> None:
    scheme, _, token = (value or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ImsError(
            "AuthFailure.InvalidAuthorization",
            "The Authorization header is missing or malformed: expected `Bearer <token>`.",
        )
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise ImsError("AuthFailure.TokenFailure")


def verify(headers: Headers, *, body: bytes, path: str, config: EmulatorConfig, now: float) -> str:
    """Check the request's credentials and signature; return the SecretId it was signed with."""
    auth = _parse_authorization(headers.get("Authorization"))
    if auth.secret_id != config.secret_id:
        raise ImsError("AuthFailure.SecretIdNotFound")
    timestamp = _timestamp(headers)
    if abs(now - timestamp) > config.clock_skew_limit:
        raise ImsError(
            "AuthFailure.SignatureExpire",
            f"Signature expired. The request timestamp {timestamp} differs from server time "
            f"{int(now)} by more than {int(config.clock_skew_limit)} seconds.",
        )
    scope = f"{auth.date}/{auth.service}/{auth.terminator}"
    if scope != signing.credential_scope(timestamp, SERVICE):
        raise ImsError(
            "AuthFailure.SignatureFailure",
            f"The credential scope `{scope}` is wrong: expected "
            f"`{signing.credential_scope(timestamp, SERVICE)}` (the UTC date of X-TC-Timestamp).",
        )
    required_signed = frozenset(signing.SIGNED_HEADERS.split(";"))
    if not required_signed <= auth.signed_headers:
        raise ImsError(
            "AuthFailure.InvalidAuthorization", f"SignedHeaders must include {signing.SIGNED_HEADERS}."
        )
    unsigned = headers.get("X-TC-Content-SHA256") == _UNSIGNED_PAYLOAD
    canonical = signing.canonical_request(
        host=required(headers, "Host"),
        content_type=required(headers, "Content-Type"),
        body=_UNSIGNED_PAYLOAD.encode() if unsigned else body,
        path=path,
    )
    expected = signing.signature(
        secret_key=config.secret_key, timestamp=timestamp, service=SERVICE, canonical=canonical
    )
    # Extra signed headers cannot match: the canonical form here covers content-type;host only.
    if auth.signed_headers != required_signed or not hmac.compare_digest(
        expected.encode(), auth.signature.encode()
    ):
        raise ImsError("AuthFailure.SignatureFailure")
    token = headers.get("X-TC-Token")
    if token is not None and token not in config.tokens:
        raise ImsError("AuthFailure.TokenFailure")
    return auth.secret_id
