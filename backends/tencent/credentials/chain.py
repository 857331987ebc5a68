"""The credential chain, in the official SDK's order: the first source configured is the one used.

1. `TENCENTCLOUD_SECRET_ID` and `TENCENTCLOUD_SECRET_KEY` (with `TENCENTCLOUD_TOKEN`), each either a
   variable or a `*_FILE`; with any file, the files are watched and re-read when they change.
2. The profile file where the SDK looks for it: `~/.tencentcloud/credentials`, then
   `/etc/tencentcloud/credentials` (`[default]` `secret_id`, `secret_key`), also re-read on change.
3. The CVM instance role, from `TENCENTCLOUD_METADATA_URL`.
4. The TKE OIDC role, `AssumeRoleWithWebIdentity` at `TENCENTCLOUD_STS_ENDPOINT`, from `TKE_*`.

The choice is made once, from the configuration, never by probing the network: a gateway with nothing
configured fails at start naming what to set (`SourceChoice` is what the options validated).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from opentelemetry import metrics

from backends.tencent.credentials.files import KeyFiles, ProfileFile, profile_path
from backends.tencent.credentials.metadata import InstanceRole
from backends.tencent.credentials.model import CredentialProvider, Credentials, Source
from backends.tencent.credentials.refresh import RefreshingCredentials
from backends.tencent.credentials.sts import DEFAULT_STS_ENDPOINT, WebIdentity, WebIdentityRole

__all__ = ["ChainSettings", "credential_provider", "credential_source"]


@dataclass(frozen=True)
class ChainSettings:
    """Every source's configuration, as one backend's options give it."""

    # The key pair given directly or read from its files at start-up (empty parts: not given).
    given: Credentials | None = None
    secret_id_file: Path | None = None
    secret_key_file: Path | None = None
    token_file: Path | None = None
    metadata_url: str | None = None
    web_identity: WebIdentity | None = None
    sts_endpoint: str = DEFAULT_STS_ENDPOINT

    @property
    def watches_files(self) -> bool:
        return any(p is not None for p in (self.secret_id_file, self.secret_key_file, self.token_file))


def credential_source(
    chain: ChainSettings, *, transport: httpx.AsyncBaseTransport | None = None
) -> Source | Credentials | None:
    """The first configured source: fixed credentials, a source to refresh from, or None."""
    if chain.given is not None and chain.watches_files:
        return KeyFiles(chain.given, chain.secret_id_file, chain.secret_key_file, chain.token_file)
    if chain.given is not None:
        return chain.given
    profile = profile_path()
    if profile is not None:
        return ProfileFile(profile)
    if chain.metadata_url is not None:
        return InstanceRole(chain.metadata_url, transport=transport)
    if chain.web_identity is not None:
        return WebIdentityRole(chain.web_identity, endpoint=chain.sts_endpoint, transport=transport)
    return None


def credential_provider(
    chain: ChainSettings,
    *,
    backend: str,
    meter: metrics.Meter | None = None,
    on_new: Callable[[Credentials], None] | None = None,
) -> CredentialProvider:
    """Fixed credentials as they are, any other source behind a `RefreshingCredentials` (which tells
    `on_new` of every credentials it loads after the first)."""
    source = credential_source(chain)
    if source is None:
        raise ValueError(f"the tencent backend {backend!r} has no credential source configured")
    if isinstance(source, Credentials):
        return source
    # What start-up validation already read from the files is the first credentials held.
    initial = chain.given if isinstance(source, KeyFiles) else None
    return RefreshingCredentials(source, backend=backend, meter=meter, initial=initial, on_new=on_new)
