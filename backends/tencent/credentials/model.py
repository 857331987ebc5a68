"""What a credential source yields, and the one-method seam the signer reads it through."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["CredentialError", "CredentialProvider", "Credentials", "Source"]


@dataclass(frozen=True)
class Credentials:
    """A Tencent Cloud API key pair, with the session token and expiry of temporary credentials.

    The secret fields are excluded from repr so a credential never reaches a log line or a traceback.
    A fixed pair is its own provider (`current`), so whatever takes a provider takes a pair too.
    """

    secret_id: str
    secret_key: str = field(repr=False)
    token: str = field(default="", repr=False)
    # Unix seconds after which the pair is refused (temporary credentials); None: it does not expire.
    expires_at: float | None = None

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must never be shown: an endpoint that echoes the request would show the key id too."""
        return tuple(s for s in (self.secret_id, self.secret_key, self.token) if s)

    def current(self) -> Credentials:
        return self


class CredentialProvider(Protocol):
    def current(self) -> Credentials:
        """The credentials to sign the next request with; never blocks, never does I/O."""
        ...


class CredentialError(Exception):
    """A source could not give credentials. The message names the source and the problem, never a
    secret or anything the source answered (which may hold one)."""


class Source(Protocol):
    """Where credentials come from: a file, the instance metadata, STS."""

    @property
    def name(self) -> str:
        """A short, fixed label (`file`, `profile`, `cvm_role`, `oidc_role`) for logs and metrics."""
        ...

    def version(self) -> Hashable:
        """Changes when the source holds new credentials (a file rewritten); constant for sources whose
        credentials change only by expiring."""
        ...

    async def load(self) -> Credentials:
        """The source's credentials now; CredentialError if it has none to give. Cancelled when it
        misses the refresh's deadline, so it must hold nothing that outlives the cancellation."""
        ...

    async def aclose(self) -> None: ...
