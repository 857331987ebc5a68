"""The emulator's run-time configuration.

The handler reads `ImsEmulator.config` once per request and each field once, so tests may assign
fields (or a whole new `Faults`) while requests are in flight: every request sees either the old or
the new value, never a torn one. Mappings and sets are replaced whole, never changed in place.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field

from .faults import Faults
from .hostile import HOSTILE_MODES

# Regions IMS is documented or sampled in (ims-facts §1.2): the mainland samples plus the intl list.
DEFAULT_REGIONS = frozenset(
    {"ap-guangzhou", "ap-shanghai", "ap-beijing", "ap-singapore", "ap-mumbai", "eu-frankfurt"}
)
# IMS downloads FileUrl from the internet; the emulator must never, so only loopback is reachable.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
AUTH_MODES = frozenset({"tc3", "bearer", "none"})
# When a request's arrival is stamped for the rate limit: as its request line is read (an idle front
# end), or once its body is read, in the handler thread (a loaded one: later, and in bunches).
ARRIVAL_STAMPS = ("request-line", "after-body")


@dataclass(frozen=True)
class TemporaryKey:
    """Temporary credentials (STS, a CVM role): the pair is accepted only with its token, until expiry."""

    secret_key: str = field(repr=False)
    token: str = field(repr=False)
    # Unix seconds; after it, requests get AuthFailure.TokenFailure.
    expires_at: float


@dataclass
class EmulatorConfig:
    # The TC3 key pair requests must be signed with (auth "tc3").
    secret_id: str = ""
    secret_key: str = field(default="", repr=False)
    # More long-term pairs of the account (SecretId -> SecretKey): Tencent allows two per account, so
    # keys are rotated by adding the new one, switching to it, then revoking the old one.
    keys: Mapping[str, str] = field(default_factory=dict, repr=False)
    # SecretIds revoked (deleted in CAM): refused with AuthFailure.SecretIdNotFound.
    revoked: Set[str] = frozenset()
    # Temporary credentials, by their SecretId (the metadata and STS emulators issue them here).
    temporary_keys: Mapping[str, TemporaryKey] = field(default_factory=dict, repr=False)
    # Session tokens accepted in X-TC-Token beside a long-term pair; a request without one is fine.
    tokens: Set[str] = frozenset()
    latency: float = 0.0
    latency_jitter: float = 0.0
    # Per SecretId, sliding one-second window; None means unlimited.
    qps_limit: int | None = None
    # The varying network delay between a client and IMS: each request reaches the limiter after a
    # uniform 0..arrival_jitter seconds, so requests sent evenly arrive unevenly.
    arrival_jitter: float = 0.0
    # One of ARRIVAL_STAMPS: the moment the jitter above is added to.
    arrival_stamp: str = "request-line"
    regions: Set[str] = DEFAULT_REGIONS
    faults: Faults = field(default_factory=Faults)
    clock_skew_limit: float = 300.0
    url_fetch_allowed_hosts: Set[str] = LOOPBACK_HOSTS
    # Per download attempt; IMS uses 3 s and retries once. Tests shorten it to keep timeouts quick.
    url_fetch_timeout: float = 3.0
    # How requests authenticate: "tc3" as Tencent does, or as a private deployment may: "bearer"
    # (`Authorization: Bearer <bearer_token>`) or "none".
    auth: str = "tc3"
    # Magenta ink in the pixels reads as advertising text (`emulator.ink`), at the cost of a decode.
    read_ink: bool = False
    bearer_token: str = field(default="", repr=False)
    # The one request path served, signed as the canonical URI under tc3; others get HTTP 404.
    path: str = "/"
    # A hostile answer to every moderated request (emulator/hostile.py), or "" for IMS's own.
    hostile: str = ""
    hostile_body_bytes: int = 200 * 1024 * 1024
    drip_interval: float = 0.2

    def __post_init__(self) -> None:
        if self.auth not in AUTH_MODES:
            raise ValueError(f"auth {self.auth!r} is not one of {sorted(AUTH_MODES)}")
        if self.auth == "tc3" and not (
            (self.secret_id and self.secret_key) or self.keys or self.temporary_keys
        ):
            raise ValueError("auth 'tc3' needs secret_id and secret_key (or keys, or temporary_keys)")
        if self.auth == "bearer" and not self.bearer_token:
            raise ValueError("auth 'bearer' needs bearer_token")
        if self.arrival_stamp not in ARRIVAL_STAMPS:
            raise ValueError(f"arrival_stamp {self.arrival_stamp!r} is not one of {list(ARRIVAL_STAMPS)}")
        if self.hostile and self.hostile not in HOSTILE_MODES:
            raise ValueError(f"hostile {self.hostile!r} is not one of {sorted(HOSTILE_MODES)}")
