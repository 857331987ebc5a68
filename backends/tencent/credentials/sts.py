"""The TKE OIDC role: `AssumeRoleWithWebIdentity` against STS, as the official SDK's
OIDCRoleArnCredential calls it.

STS API 2018-08-13, unsigned (`Authorization: SKIP`: the web identity token is the proof), with
`ProviderId`, `WebIdentityToken`, `RoleArn`, `RoleSessionName` and `DurationSeconds`; the answer is
`Response.Credentials.{TmpSecretId, TmpSecretKey, Token}` and `Response.ExpiredTime`. The token file
is read again for every call: TKE rotates the projected token.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

import httpx

from backends.tencent.codes import UPSTREAM_CODE
from backends.tencent.credentials.files import read_credential_file
from backends.tencent.credentials.model import CredentialError, Credentials
from backends.tencent.credentials.remote import credential_client, json_object, send, temporary_credentials
from common.scrub import bounded_token

__all__ = ["ACTION", "DEFAULT_STS_ENDPOINT", "DURATION_SECONDS", "VERSION", "WebIdentity", "WebIdentityRole"]

DEFAULT_STS_ENDPOINT = "https://sts.tencentcloudapi.com/"
ACTION = "AssumeRoleWithWebIdentity"
VERSION = "2018-08-13"
# The SDK's default validity, in seconds (STS allows up to 43200).
DURATION_SECONDS = 7200
_WHAT = "STS"


@dataclass(frozen=True)
class WebIdentity:
    """What TKE injects: `TKE_REGION`, `TKE_PROVIDER_ID`, `TKE_WEB_IDENTITY_TOKEN_FILE`, `TKE_ROLE_ARN`."""

    region: str
    provider_id: str
    token_file: Path
    role_arn: str


class WebIdentityRole:
    name = "oidc_role"

    def __init__(
        self,
        identity: WebIdentity,
        *,
        endpoint: str = DEFAULT_STS_ENDPOINT,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._identity = identity
        self._endpoint = endpoint
        self._client = credential_client(transport)
        self._clock = clock

    def version(self) -> Hashable:
        return None

    async def load(self) -> Credentials:
        token = await asyncio.to_thread(read_credential_file, self._identity.token_file, "web identity token")
        now = self._clock()
        params = {
            "ProviderId": self._identity.provider_id,
            "WebIdentityToken": token,
            "RoleArn": self._identity.role_arn,
            "RoleSessionName": f"moderation-gateway-{int(now * 1e6)}",
            "DurationSeconds": DURATION_SECONDS,
        }
        request = httpx.Request(
            "POST",
            self._endpoint,
            content=json.dumps(params).encode(),
            headers={
                "Content-Type": "application/json",
                "X-TC-Action": ACTION,
                "X-TC-Version": VERSION,
                "X-TC-Region": self._identity.region,
                "X-TC-Timestamp": str(int(now)),
                "X-TC-RequestClient": "moderation-gateway",
                "Authorization": "SKIP",
            },
        )
        answer = json_object(await send(self._client, request, what=_WHAT), what=_WHAT).get("Response")
        if not isinstance(answer, dict):
            raise CredentialError(f"{_WHAT} answered no Response")
        error = answer.get("Error")
        if error is not None:
            code = bounded_token(str(error.get("Code", "")) if isinstance(error, dict) else "", UPSTREAM_CODE)
            raise CredentialError(f"{_WHAT} refused {ACTION}: {code or 'no code'}")
        credentials = answer.get("Credentials")
        if not isinstance(credentials, dict):
            raise CredentialError(f"{_WHAT} answered no Credentials")
        return temporary_credentials(credentials, answer, what=_WHAT)

    async def aclose(self) -> None:
        await self._client.aclose()
