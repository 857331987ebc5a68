"""Request authentication: TC3-HMAC-SHA256 as Tencent does, or a private deployment's bearer token or none.

TC3 is verified with the emulator's own `tc3` module, never the gateway's signing code, so a bug in
the gateway's signer is refused here rather than mirrored; Tencent's published vectors and the
official SDK tests in test_ims_emulator.py pin `tc3` to the real algorithm.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

from . import tc3
from .config import EmulatorConfig, TemporaryKey
from .errors import ImsError
from .headers import Headers, required

SERVICE = "ims"
# Whom the rate limit counts a request against when it carries no SecretId.
BEARER_IDENTITY = "bearer"
ANONYMOUS_IDENTITY = "anonymous"
# Tencent requires at least these two to be signed; a client may sign more (e.g. x-tc-action).
REQUIRED_SIGNED_HEADERS = frozenset({"content-type", "host"})
# The SDK sends this value to sign the constant string instead of the body (ClientProfile.unsignedPayload).
_UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_AUTHORIZATION = re.compile(
    rf"{re.escape(tc3.ALGORITHM)} Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed_headers>[^,\s]+),\s*Signature=(?P<signature>\S+)"
)


@dataclass(frozen=True)
class _Authorization:
    secret_id: str
    date: str
    service: str
    terminator: str
    # In the order the client listed them: the canonical headers follow that order.
    signed_headers: tuple[str, ...]
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
        signed_headers=tuple(match["signed_headers"].lower().split(";")),
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
    temporary = config.temporary_keys.get(auth.secret_id)
    secret_key = _secret_key(auth.secret_id, config, temporary)
    timestamp = _timestamp(headers)
    if abs(now - timestamp) > config.clock_skew_limit:
        raise ImsError(
            "AuthFailure.SignatureExpire",
            f"Signature expired. The request timestamp {timestamp} differs from server time "
            f"{int(now)} by more than {int(config.clock_skew_limit)} seconds.",
        )
    scope = f"{auth.date}/{auth.service}/{auth.terminator}"
    expected_scope = tc3.credential_scope(tc3.utc_date(timestamp), SERVICE)
    if scope != expected_scope:
        raise ImsError(
            "AuthFailure.SignatureFailure",
            f"The credential scope `{scope}` is wrong: expected `{expected_scope}` "
            "(the UTC date of X-TC-Timestamp).",
        )
    if not set(auth.signed_headers) >= REQUIRED_SIGNED_HEADERS:
        raise ImsError(
            "AuthFailure.InvalidAuthorization",
            f"SignedHeaders must include {';'.join(sorted(REQUIRED_SIGNED_HEADERS))}.",
        )
    unsigned = headers.get("X-TC-Content-SHA256") == _UNSIGNED_PAYLOAD
    canonical = tc3.canonical_request(
        method="POST",
        uri=path,
        # API 3.0 POST carries its parameters in the body: the canonical query string is empty.
        query="",
        headers=[(name, _signed_header(headers, name)) for name in auth.signed_headers],
        payload=_UNSIGNED_PAYLOAD.encode() if unsigned else body,
    )
    key = tc3.derived_key(secret_key=secret_key, date=auth.date, service=SERVICE)
    to_sign = tc3.string_to_sign(timestamp=timestamp, scope=expected_scope, canonical=canonical)
    if not hmac.compare_digest(tc3.signature(key=key, to_sign=to_sign).encode(), auth.signature.encode()):
        raise ImsError("AuthFailure.SignatureFailure")
    _verify_token(headers.get("X-TC-Token"), config, temporary, now)
    return auth.secret_id


def _secret_key(secret_id: str, config: EmulatorConfig, temporary: TemporaryKey | None) -> str:
    """The key the SecretId signs with; a revoked or unknown SecretId is not found, as in CAM."""
    if secret_id in config.revoked:
        raise ImsError("AuthFailure.SecretIdNotFound")
    if temporary is not None:
        return temporary.secret_key
    if secret_id and secret_id == config.secret_id:
        return config.secret_key
    if secret_id in config.keys:
        return config.keys[secret_id]
    raise ImsError("AuthFailure.SecretIdNotFound")


def _verify_token(
    token: str | None, config: EmulatorConfig, temporary: TemporaryKey | None, now: float
) -> None:
    """Temporary credentials need their own token, until they expire; a long-term pair may carry one of
    `config.tokens`."""
    if temporary is None:
        if token is not None and token not in config.tokens:
            raise ImsError("AuthFailure.TokenFailure")
        return
    if token is None or not hmac.compare_digest(token.encode(), temporary.token.encode()):
        raise ImsError("AuthFailure.TokenFailure", "The X-TC-Token is missing or not this key's token.")
    if now > temporary.expires_at:
        raise ImsError(
            "AuthFailure.TokenFailure",
            f"The token expired at {int(temporary.expires_at)}, {int(now - temporary.expires_at)} s ago.",
        )


def _signed_header(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None:
        raise ImsError("AuthFailure.SignatureFailure", f"The signed header `{name}` is not in the request.")
    return value
