"""Which governor a backend gets: the fleet's when Redis is configured and the backend spends an
account's budget, else the in-process one. `FleetConnection` also gives the verdict cache its client."""

from __future__ import annotations

import hashlib
from pathlib import Path

import redis.asyncio as redis

from service.governor.base import Governor
from service.governor.connect import redis_client
from service.governor.fleet import fleet_governor
from service.governor.local import RateGovernor
from service.telemetry import Metrics

__all__ = ["FleetConnection", "build_governor", "default_budget_key"]


def default_budget_key(backend_type: str, account: str) -> str:
    """The budget's key in Redis: a hash of the account, so no credential is ever written there."""
    digest = hashlib.sha256(f"{backend_type}:{account}".encode()).hexdigest()
    return f"{backend_type}-{digest[:32]}"


class FleetConnection:
    """Where fleet mode's Redis is; each backend's governor gets a client of its own from it."""

    def __init__(
        self, url: str, *, password: str | None, ca_file: str | None, expected_replicas: int | None = None
    ) -> None:
        self._url = url
        self._password = password
        self._ca_file = ca_file
        # What a replica that never reached Redis assumes (`MODERATION_FLEET_EXPECTED_REPLICAS`).
        self._expected_replicas = expected_replicas

    def __repr__(self) -> str:
        return "FleetConnection(<redacted>)"

    def client(self) -> redis.Redis:
        """A client of its own (a connection pool), for a governor or the verdict cache."""
        return redis_client(
            self._url, password=self._password, ca_file=Path(self._ca_file) if self._ca_file else None
        )

    def governor(
        self, budget_key: str, qps: int, *, name: str, interactive_share: float, metrics: Metrics | None
    ) -> Governor:
        return fleet_governor(
            self.client(),
            budget_key,
            qps,
            name=name,
            interactive_share=interactive_share,
            metrics=metrics,
            expected_replicas=self._expected_replicas,
        )


def build_governor(
    qps: int,
    *,
    name: str,
    interactive_share: float,
    metrics: Metrics | None,
    fleet: FleetConnection | None,
    budget_key: str | None,
) -> Governor:
    """The fleet's governor for a backend with a budget key (given, or derived from its account) when
    `fleet` is set; else the in-process one."""
    if fleet is None or budget_key is None:
        return RateGovernor(qps, interactive_share=interactive_share, metrics=metrics)
    return fleet.governor(budget_key, qps, name=name, interactive_share=interactive_share, metrics=metrics)
