"""A loopback STS: `AssumeRoleWithWebIdentity` (API 2018-08-13), as TKE's OIDC role uses it.

The request is checked as STS does: unsigned (`Authorization: SKIP`), `X-TC-Action`, `X-TC-Version`,
`X-TC-Region`, and the body's `ProviderId`, `WebIdentityToken`, `RoleArn`, `RoleSessionName` and
`DurationSeconds`. An accepted call gets a freshly issued key in `Response.Credentials`, with
`Response.ExpiredTime` and `Response.Expiration`; a refused one the API 3.0 error envelope.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Set
from datetime import UTC, datetime
from typing import Any

from .issuer import KeyIssuer
from .loopback import Answer, LoopbackServer

__all__ = ["StsEmulator"]

ACTION = "AssumeRoleWithWebIdentity"
VERSION = "2018-08-13"
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,128}")


class StsEmulator(LoopbackServer):
    def __init__(
        self,
        issuer: KeyIssuer,
        *,
        provider_id: str,
        role_arn: str,
        web_identity_tokens: Set[str],
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(host)
        self._issuer = issuer
        self.provider_id = provider_id
        self.role_arn = role_arn
        # Replaced whole to rotate the tokens accepted.
        self.web_identity_tokens = web_identity_tokens
        self._calls_lock = threading.Lock()
        self._calls: list[dict[str, Any]] = []

    @property
    def calls(self) -> list[dict[str, Any]]:
        """The accepted calls' parameters (region included), oldest first."""
        with self._calls_lock:
            return list(self._calls)

    def respond(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        try:
            params = self._check(method, headers, body)
        except _Refused as refused:
            return _envelope({"Error": {"Code": refused.code, "Message": refused.message}})
        secret_id, key = self._issuer.issue()
        with self._calls_lock:
            self._calls.append({**params, "Region": headers.get("x-tc-region", "")})
        return _envelope(
            {
                "Credentials": {"TmpSecretId": secret_id, "TmpSecretKey": key.secret_key, "Token": key.token},
                "ExpiredTime": int(key.expires_at),
                "Expiration": datetime.fromtimestamp(key.expires_at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )

    def _check(self, method: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        if method != "POST":
            raise _Refused("UnsupportedProtocol", "use POST")
        if headers.get("authorization") != "SKIP":
            raise _Refused(
                "AuthFailure.InvalidAuthorization", f"{ACTION} is called unsigned: Authorization SKIP"
            )
        if headers.get("x-tc-action") != ACTION or headers.get("x-tc-version") != VERSION:
            raise _Refused("InvalidAction", f"expected {ACTION} of version {VERSION}")
        if not headers.get("x-tc-region"):
            raise _Refused("MissingParameter", "X-TC-Region is required")
        try:
            params = json.loads(body)
        except ValueError:
            raise _Refused("InvalidParameter", "the body is not JSON") from None
        if not isinstance(params, dict):
            raise _Refused("InvalidParameter", "the body is not a JSON object")
        duration = params.get("DurationSeconds", 7200)
        if not isinstance(duration, int) or not 0 < duration <= 43200:
            raise _Refused("InvalidParameter.ParamError", "DurationSeconds must be 1..43200")
        if not _SESSION_NAME.fullmatch(str(params.get("RoleSessionName", ""))):
            raise _Refused("InvalidParameter.ParamError", "RoleSessionName is invalid")
        if params.get("ProviderId") != self.provider_id:
            raise _Refused("InvalidParameter.ParamError", "no such identity provider")
        if params.get("RoleArn") != self.role_arn:
            raise _Refused("ResourceNotFound.RoleNotExist", "no such role")
        if params.get("WebIdentityToken") not in self.web_identity_tokens:
            raise _Refused("InvalidParameter.WebIdentityTokenError", "the web identity token is invalid")
        return params


class _Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code)
        self.code = code
        self.message = message


def _envelope(response: dict[str, Any]) -> Answer:
    return (
        200,
        "application/json",
        json.dumps({"Response": {**response, "RequestId": str(uuid.uuid4())}}).encode(),
    )
