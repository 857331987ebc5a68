"""Temporary credentials for the IMS emulator to accept: what STS and the CVM metadata service hand out."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable

from .config import TemporaryKey
from .server import ImsEmulator

__all__ = ["IssuedKey", "KeyIssuer"]

IssuedKey = tuple[str, TemporaryKey]


class KeyIssuer:
    """Issues temporary keys valid for `lifetime` seconds and registers each with the IMS emulator."""

    def __init__(self, ims: ImsEmulator, *, lifetime: float, clock: Callable[[], float] = time.time) -> None:
        self._ims = ims
        self.lifetime = lifetime
        self._clock = clock
        self._lock = threading.Lock()
        self._issued: list[str] = []

    @property
    def issued(self) -> list[str]:
        """The SecretIds issued so far, oldest first."""
        with self._lock:
            return list(self._issued)

    def issue(self) -> IssuedKey:
        secret_id = "AKIDtmp" + secrets.token_hex(12)
        key = TemporaryKey(
            secret_key=secrets.token_urlsafe(24),
            token=secrets.token_urlsafe(48),
            expires_at=self._clock() + self.lifetime,
        )
        with self._lock:
            self._issued.append(secret_id)
            # Replaced whole: the emulator's handlers read the mapping without a lock.
            config = self._ims.config
            config.temporary_keys = {**config.temporary_keys, secret_id: key}
        return secret_id, key
