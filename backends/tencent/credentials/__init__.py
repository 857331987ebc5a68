"""Where the tencent backend's credentials come from, and how they are kept fresh (see `chain`)."""

from backends.tencent.credentials.chain import ChainSettings, credential_provider, credential_source
from backends.tencent.credentials.files import PROFILE_PATHS, KeyFiles, ProfileFile, profile_path
from backends.tencent.credentials.metadata import DEFAULT_METADATA_URL, InstanceRole
from backends.tencent.credentials.model import CredentialError, CredentialProvider, Credentials, Source
from backends.tencent.credentials.refresh import CredentialMetrics, RefreshingCredentials
from backends.tencent.credentials.sts import DEFAULT_STS_ENDPOINT, WebIdentity, WebIdentityRole

__all__ = [
    "DEFAULT_METADATA_URL",
    "DEFAULT_STS_ENDPOINT",
    "PROFILE_PATHS",
    "ChainSettings",
    "CredentialError",
    "CredentialMetrics",
    "CredentialProvider",
    "Credentials",
    "InstanceRole",
    "KeyFiles",
    "ProfileFile",
    "RefreshingCredentials",
    "Source",
    "WebIdentity",
    "WebIdentityRole",
    "credential_provider",
    "credential_source",
    "profile_path",
]
