"""The verdict cache: never pay twice for one image (README: Verdict cache).

`build_cache` makes the configured one (`MODERATION_CACHE`: `memory`, `redis` or `off`); the servicer
asks it before each request goes to the router.
"""

from __future__ import annotations

from service.cache.coalesce import Coalescer
from service.cache.fleet import FleetStore
from service.cache.keys import Bypass, KeyPolicy, cache_key
from service.cache.memory import MemoryLru
from service.cache.verdicts import Ttls, VerdictCache
from service.governor import FleetConnection
from service.observe import CostMetrics
from service.settings import Settings

__all__ = [
    "Bypass",
    "Coalescer",
    "FleetStore",
    "KeyPolicy",
    "MemoryLru",
    "Ttls",
    "VerdictCache",
    "build_cache",
    "cache_key",
]


def build_cache(
    settings: Settings, metrics: CostMetrics, fleet: FleetConnection | None
) -> VerdictCache | None:
    """The cache `settings` ask for; None when it is off."""
    if settings.cache == "off":
        return None
    store = FleetStore(fleet.client()) if settings.cache == "redis" and fleet is not None else None
    return VerdictCache(
        policy=KeyPolicy(settings.cache_version, urls=settings.cache_urls),
        ttls=Ttls(settings.cache_ttl_pass, settings.cache_ttl_review, settings.cache_ttl_block),
        lru=MemoryLru(settings.cache_max_entries),
        metrics=metrics,
        fleet=store,
    )
