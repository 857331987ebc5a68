"""A loopback CVM instance metadata service: the instance role's temporary credentials.

`GET /latest/meta-data/cam/security-credentials/` names the role; `GET .../<role>` answers
`{"Code": "Success", "TmpSecretId", "TmpSecretKey", "Token", "ExpiredTime", "Expiration"}` with a
freshly issued key, as the real service does for a role bound to the instance.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from .issuer import KeyIssuer
from .loopback import Answer, LoopbackServer

__all__ = ["MetadataEmulator"]

ROLES_PATH = "/latest/meta-data/cam/security-credentials/"


class MetadataEmulator(LoopbackServer):
    def __init__(
        self, issuer: KeyIssuer, *, role: str = "moderation-gateway", host: str = "127.0.0.1"
    ) -> None:
        super().__init__(host)
        self._issuer = issuer
        self.role = role

    @property
    def metadata_url(self) -> str:
        """What `TENCENTCLOUD_METADATA_URL` names."""
        return self.url + "/latest/meta-data/"

    def respond(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if method != "GET" or not path.startswith(ROLES_PATH):
            return 404, "text/plain", b"not found\n"
        role = path.removeprefix(ROLES_PATH)
        if not role:
            return 200, "text/plain", self.role.encode()
        if role != self.role:
            return 404, "text/plain", b"no such role\n"
        secret_id, key = self._issuer.issue()
        answer = {
            "TmpSecretId": secret_id,
            "TmpSecretKey": key.secret_key,
            "Token": key.token,
            "ExpiredTime": int(key.expires_at),
            "Expiration": datetime.fromtimestamp(key.expires_at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Code": "Success",
        }
        return 200, "application/json", json.dumps(answer).encode()
