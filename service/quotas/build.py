"""The quota guard a gateway's settings describe: Redis when fleet mode is configured, else in-process."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from service.governor import FleetConnection
from service.quotas.calendar import Clock, wall_clock
from service.quotas.config import load_quotas
from service.quotas.guard import QuotaGuard
from service.quotas.redis_store import RedisStore
from service.quotas.store import LocalStore, QuotaStore
from service.settings import Settings
from service.telemetry import SCOPE, Telemetry

__all__ = ["build_quotas"]

# The quotas' clock. Tests that roll the day over start the gateway through a launcher that replaces it.
CLOCK: Clock = wall_clock


def build_quotas(
    settings: Settings, fleet: FleetConnection | None, telemetry: Telemetry
) -> QuotaGuard | None:
    """None without a routing file (quotas are declared there); else a guard, with or without quotas
    yet (the file may gain some while the gateway runs)."""
    if settings.routes_file is None:
        return None
    # Validated when the settings were loaded; a file broken since then fails the start here.
    book = load_quotas(settings.routes_file)
    store: QuotaStore = RedisStore(fleet.client()) if fleet is not None else LocalStore(CLOCK)
    return QuotaGuard(
        book,
        store,
        zone=ZoneInfo(settings.quota_timezone),
        mode=settings.quota_redis_failure,
        meter=telemetry.meter_provider.get_meter(SCOPE),
        callers=telemetry.metrics.callers,
        clock=CLOCK,
        routes_file=settings.routes_file,
    )
