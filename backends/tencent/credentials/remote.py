"""The HTTP side of the remote sources: one small client, answers capped and read as JSON objects.

The endpoints are the operator's configuration (`TENCENTCLOUD_METADATA_URL`, `TENCENTCLOUD_STS_ENDPOINT`
or the routing file), never anything a caller sends, and redirects are never followed, so no request
can steer these fetches elsewhere.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from backends.http import TRANSPORT_ERRORS
from backends.tencent.credentials.model import CredentialError, Credentials

__all__ = [
    "MAX_ANSWER_BYTES",
    "TIMEOUT",
    "credential_client",
    "json_object",
    "send",
    "temporary_credentials",
]

# A credential answer is a few hundred bytes; anything past this is not one.
MAX_ANSWER_BYTES = 64 * 1024
# Seconds per request: both endpoints answer in milliseconds, and a refresh runs well ahead of expiry.
TIMEOUT = 5.0


def credential_client(transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, timeout=TIMEOUT, follow_redirects=False, trust_env=False)


async def send(client: httpx.AsyncClient, request: httpx.Request, *, what: str) -> bytes:
    """The body of a 200 answer, at most MAX_ANSWER_BYTES; CredentialError naming `what` otherwise."""
    try:
        response = await client.send(request, stream=True)
        try:
            if response.status_code != 200:
                raise CredentialError(f"{what} answered HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    raise CredentialError(f"{what} answered more than {MAX_ANSWER_BYTES} bytes")
            return bytes(body)
        finally:
            await response.aclose()
    except TRANSPORT_ERRORS as exc:
        raise CredentialError(f"cannot reach {what} ({type(exc).__name__})") from None


def json_object(body: bytes, *, what: str) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise CredentialError(f"{what} did not answer JSON") from None
    if not isinstance(value, dict):
        raise CredentialError(f"{what} did not answer a JSON object")
    return value


def temporary_credentials(fields: dict[str, Any], expiry: dict[str, Any], *, what: str) -> Credentials:
    """`TmpSecretId`, `TmpSecretKey` and `Token` of `fields`, expiring at `ExpiredTime` of `expiry`
    (the metadata service answers both in one object, STS in two)."""
    return Credentials(
        _text_field(fields, "TmpSecretId", what=what),
        _text_field(fields, "TmpSecretKey", what=what),
        _text_field(fields, "Token", what=what),
        expires_at=_expiry_field(expiry, "ExpiredTime", what=what),
    )


def _text_field(value: dict[str, Any], key: str, *, what: str) -> str:
    field = value.get(key)
    if not isinstance(field, str) or not field.strip():
        raise CredentialError(f"{what} answered no {key}")
    return field.strip()


def _expiry_field(value: dict[str, Any], key: str, *, what: str) -> float:
    field = value.get(key)
    if isinstance(field, bool) or not isinstance(field, int | float) or field <= 0:
        raise CredentialError(f"{what} answered no {key}")
    return float(field)
