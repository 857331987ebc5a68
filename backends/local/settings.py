"""The local backend's settings, importable without loading its models (the service reads them at start
whichever backend it runs)."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import BeforeValidator, DirectoryPath, Field, FilePath
from pydantic_settings import NoDecode

from backends.fetch import FetchPolicy, parse_networks
from backends.local.frames import DEFAULT_LIMITS, FrameLimits
from backends.options import BackendOptions

__all__ = ["LocalSettings"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class LocalSettings(BackendOptions):
    # Deprecated, for one release: the gateway folds these four into its policy (`service.policy.legacy`).
    policy_file: FilePath | None = Field(
        None,
        validation_alias="MODERATION_LOCAL_POLICY",
        description="deprecated: a policy file the gateway uses as `MODERATION_POLICY_FILE` when that is "
        "unset (see [Local backend](#the-local-backend)).",
    )
    keyword_dir: DirectoryPath | None = Field(
        None,
        validation_alias="MODERATION_LOCAL_KEYWORDS",
        description="deprecated: folder of keyword libraries (one TOML file each), folded into the "
        "gateway's policy as keyword lists of every BizType.",
    )
    allow_dir: DirectoryPath | None = Field(
        None,
        validation_alias="MODERATION_LOCAL_ALLOW_DIR",
        description="deprecated: folder of sample images, folded into the gateway's policy as an exact "
        "(SHA-256) allow list of every BizType.",
    )
    deny_dir: DirectoryPath | None = Field(
        None,
        validation_alias="MODERATION_LOCAL_DENY_DIR",
        description="deprecated: folder of sample images (a sub-folder's name is the label), folded into "
        "the gateway's policy as near-duplicate (PDQ) deny lists of every BizType.",
    )
    workers: int = Field(
        2,
        ge=1,
        le=64,
        validation_alias="MODERATION_LOCAL_WORKERS",
        description="threads analysing images (models run off the event loop).",
    )
    max_frames: int = Field(
        DEFAULT_LIMITS.max_frames,
        ge=1,
        le=1000,
        validation_alias="MODERATION_LOCAL_MAX_FRAMES",
        description="frames analysed at most per image (IMS's own limit is 5); a larger `max_frames` "
        "is clamped to it.",
    )
    max_pixels: int = Field(
        DEFAULT_LIMITS.max_pixels,
        ge=1,
        validation_alias="MODERATION_LOCAL_MAX_PIXELS",
        description="decoded pixels per request, over every frame sampled or stepped through: by "
        "default one frame of the largest size IMS accepts (9999x9999).",
        json_schema_extra={"default_text": "`99980001` (9999x9999)"},
    )
    decode_budget_bytes: int = Field(
        1024**3,
        ge=64 * 1024**2,
        validation_alias="MODERATION_LOCAL_DECODE_BUDGET_BYTES",
        description="memory all images being decoded at once may take, estimated from their headers; "
        "others wait within their deadlines or get RESOURCE_EXHAUSTED.",
        json_schema_extra={"default_text": "`1073741824` (1 GiB)"},
    )
    fetch_allow_networks: Annotated[tuple[Network, ...], NoDecode, BeforeValidator(parse_networks)] = Field(
        (),
        validation_alias="MODERATION_FETCH_ALLOW_NETWORKS",
        description="comma-separated networks (`10.1.0.0/16,::1/128`) the local backend may download "
        "image URLs from although they are not publicly routable.",
    )

    @property
    def limits(self) -> FrameLimits:
        return FrameLimits(max_frames=self.max_frames, max_pixels=self.max_pixels)

    @property
    def fetch(self) -> FetchPolicy:
        return FetchPolicy(allowed_networks=self.fetch_allow_networks)
