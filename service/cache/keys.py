"""Cache keys: a SHA-256 over everything that can change a verdict, or the reason a request has none.

The image's own bytes are hashed once per call (`service.image_hash`), then the key is the hash of
that digest with the fingerprint of each backend of the route's chain (`Backend.fingerprint`: type,
endpoint, region, account, policy and library files), `biz_type`, `type`, `biz_tag`, `interval`,
`max_frames` and the operator's policy version. The key starts with the hashed account of the chain's
first backend, the only one whose verdicts are stored, so each account's verdicts have their own
namespace in Redis. Keys name nothing a caller sent: Redis sees hashes only.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from moderation.v1.moderation_service_pb2 import ModerateImageRequest

from backends.base import Fingerprint
from service.image_hash import ImageHash

__all__ = ["Bypass", "KeyPolicy", "cache_key"]

# The namespace of backends without an account (local ones, private deployments without a key id).
NO_ACCOUNT = "no-account"


class Bypass(enum.Enum):
    """Why a request is not looked up in the cache (a metric label)."""

    USER_FIELDS = "user_fields"
    URL = "url"


@dataclass(frozen=True)
class KeyPolicy:
    version: str
    # MODERATION_CACHE_URLS: a URL image is keyed by its URL.
    urls: bool


async def cache_key(
    request: ModerateImageRequest,
    chain: tuple[Fingerprint, ...],
    policy: KeyPolicy,
    image: ImageHash,
    *,
    user_fields: bool,
) -> str | Bypass:
    """The request's key (`<account>:<64 hex digits>`), or why it bypasses the cache.

    `image`: the hash of the request's content. `user_fields`: the route opted in to caching requests
    that carry `user` or `device`.
    """
    if not user_fields and (request.HasField("user") or request.HasField("device")):
        return Bypass.USER_FIELDS
    if request.WhichOneof("image") == "url":
        if not policy.urls:
            return Bypass.URL
        hashed = b"url:" + request.url.encode()
    else:
        hashed = b"content:" + await image.digest()
    # A tuple's repr spells each field unambiguously (strings and bytes quoted and escaped), so no two
    # sets of fields give the same text; one call instead of encoding each field.
    fields = (
        policy.version,
        tuple(backend.digest for backend in chain),
        request.biz_type,
        request.type,
        request.biz_tag,
        request.interval,
        request.max_frames,
        hashed,
    )
    return f"{chain[0].account or NO_ACCOUNT}:{hashlib.sha256(repr(fields).encode()).hexdigest()}"
