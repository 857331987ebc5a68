"""Standard Webhooks v1 signatures: base64 HMAC-SHA256 over `id.timestamp.body`.

Secrets are `whsec_` + base64 of the key. Several may be active: every delivery is signed with each,
newest first, so a receiver that knows any one of them verifies it and keys rotate without a gap.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PREFIX", "SecretError", "SecretSource", "WebhookSigner", "parse_secrets", "signature"]

log = logging.getLogger(__name__)

PREFIX = "whsec_"
# Shorter keys are guessable offline from one signed body.
MIN_KEY_BYTES = 16


class SecretError(ValueError):
    """A webhook secret that is not `whsec_` + base64 of at least MIN_KEY_BYTES bytes."""


def _key(secret: str) -> bytes:
    if not secret.startswith(PREFIX):
        raise SecretError(f"each webhook secret must start with {PREFIX}")
    try:
        key = base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except binascii.Error:
        raise SecretError(f"each webhook secret must be {PREFIX} followed by base64") from None
    if len(key) < MIN_KEY_BYTES:
        raise SecretError(f"each webhook secret must hold at least {MIN_KEY_BYTES} bytes")
    return key


def parse_secrets(text: str) -> tuple[str, ...]:
    """Secrets separated by white space, newest first; SecretError (naming no secret) if one is bad."""
    secrets = tuple(text.split())
    for secret in secrets:
        _key(secret)
    return secrets


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` entry of the `webhook-signature` header."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


@dataclass(frozen=True)
class WebhookSigner:
    keys: tuple[bytes, ...]

    @classmethod
    def of(cls, secrets: Sequence[str]) -> WebhookSigner:
        return cls(tuple(_key(s) for s in secrets))

    def headers(self, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """The three Standard Webhooks headers; the signature header lists one entry per active key."""
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(signature(k, message_id, timestamp, body) for k in self.keys),
        }


class SecretSource:
    """The active secrets: given once, or read from a file whenever it changes (rotation without a
    restart). A file that turns bad keeps the secrets read before, and says so once."""

    def __init__(self, secrets: tuple[str, ...], file: Path | None = None) -> None:
        self._signer = WebhookSigner.of(secrets)
        self._file = file
        self._seen: tuple[int, int] | None = None
        if file is not None:
            self.current()

    @property
    def signs(self) -> bool:
        return bool(self.current().keys)

    def current(self) -> WebhookSigner:
        if self._file is None:
            return self._signer
        try:
            stat = self._file.stat()
            if (stat.st_mtime_ns, stat.st_size) != self._seen:
                self._seen = (stat.st_mtime_ns, stat.st_size)
                self._signer = WebhookSigner.of(parse_secrets(self._file.read_text()))
        except (OSError, SecretError) as problem:
            log.warning("webhook secrets file not re-read (%s); the previous secrets stay in use", problem)
        return self._signer
