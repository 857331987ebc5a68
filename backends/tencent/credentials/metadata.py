"""The CVM instance role: temporary credentials from the instance metadata endpoint.

As the official SDK's CVMRoleCredential reads them: `<metadata>/cam/security-credentials/` names the
role bound to the instance, and `<metadata>/cam/security-credentials/<role>` answers
`{"Code": "Success", "TmpSecretId", "TmpSecretKey", "Token", "ExpiredTime", "Expiration"}`.
"""

from __future__ import annotations

import re
from collections.abc import Hashable

import httpx

from backends.tencent.credentials.model import CredentialError, Credentials
from backends.tencent.credentials.remote import credential_client, json_object, send, temporary_credentials

__all__ = ["DEFAULT_METADATA_URL", "InstanceRole"]

DEFAULT_METADATA_URL = "http://metadata.tencentyun.com/latest/meta-data/"
_ROLES = "cam/security-credentials/"
_WHAT = "the instance metadata endpoint"
# CAM role names: letters, digits and +=,.@_- (so a name can never change the request's path).
_ROLE_NAME = re.compile(r"[\w+=,.@-]{1,128}")


class InstanceRole:
    name = "cvm_role"

    def __init__(self, metadata_url: str, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._roles_url = metadata_url.rstrip("/") + "/" + _ROLES
        self._client = credential_client(transport)

    def version(self) -> Hashable:
        return None

    async def load(self) -> Credentials:
        # The role is asked for each time: an instance's role can be replaced while it runs.
        listing = (await send(self._client, httpx.Request("GET", self._roles_url), what=_WHAT)).decode(
            "utf-8", "replace"
        )
        role = next(iter(listing.split()), "")
        if not _ROLE_NAME.fullmatch(role):
            raise CredentialError(f"{_WHAT} names no CAM role bound to this instance")
        body = await send(self._client, httpx.Request("GET", self._roles_url + role), what=_WHAT)
        answer = json_object(body, what=_WHAT)
        if answer.get("Code") != "Success":
            raise CredentialError(f"{_WHAT} did not answer Code Success for the instance's role")
        return temporary_credentials(answer, answer, what=_WHAT)

    async def aclose(self) -> None:
        await self._client.aclose()
