"""The fleet governor's fallback state machine: what a replica spends while Redis is away.

SHARED: slots come from the fleet's schedule. FALLBACK (Redis unreachable): from an in-process share of
the budget, the pace over the replicas alive at last contact. Redis may still answer the others: once
this replica has been silent for `SILENT_AFTER`, their pace leaves its share to it until they count it
dead, so the share starts only then, after the slots reserved before. SETTLING (Redis answers again):
back on the schedule, with the share as a second cap for `SETTLE` seconds, while the other replicas'
probes bring them back too. One log line and one `moderation.fleet.transitions` count per transition.
"""

from __future__ import annotations

import logging

from service.governor.local import RateGovernor
from service.telemetry import Metrics

__all__ = [
    "HEARTBEAT_INTERVAL",
    "HEARTBEAT_TIMEOUT",
    "HORIZON",
    "SETTLE",
    "SILENT_AFTER",
    "Fallback",
    "ShareDropped",
]

log = logging.getLogger("service.governor.fleet")

HEARTBEAT_INTERVAL = 0.5
# Three missed heartbeats and a replica no longer counts toward the fallback share.
HEARTBEAT_TIMEOUT = 1.5
# A replica that missed a heartbeat may have lost Redis and be spending its share: the others' pace
# leaves that share to it until HEARTBEAT_TIMEOUT counts it dead, and a replica that lost Redis waits
# this long, and out the slots reserved meanwhile, before it spends the share.
SILENT_AFTER = 2 * HEARTBEAT_INTERVAL
# How far ahead batch items may reserve: what a killed replica can leave unused.
HORIZON = 0.25
SETTLE = 1.0
# A replica that has never reached Redis, with no MODERATION_FLEET_EXPECTED_REPLICAS, grants nothing for
# this long (unless Redis answers first): it cannot know how many replicas spend the budget beside it.
FIRST_CONTACT_GRACE = 30.0


class ShareDropped(Exception):
    """Redis answered before the share granted anything: the waiter takes a slot of the schedule."""


class Fallback:
    def __init__(
        self,
        name: str,
        qps: int,
        *,
        interactive_share: float,
        metrics: Metrics | None,
        expected_replicas: int | None = None,
    ) -> None:
        self.name = name
        self._expected_replicas = expected_replicas
        self.active = False
        self._qps = qps
        self._interactive_share = interactive_share
        self._metrics = metrics
        self._local: RateGovernor | None = None
        self._settle_until = 0.0

    @property
    def rate(self) -> float | None:
        """The share's pace while in fallback, else None."""
        return self._local.rate if self.active and self._local is not None else None

    def share(self, now: float) -> RateGovernor | None:
        """The in-process share that caps this replica now: in fallback, and while settling back."""
        if self._local is not None and not self.active and now >= self._settle_until:
            self._local = None
        return self._local

    def enter(self, *, rate: float, replicas: int | None, margin: float, why: str) -> bool:
        """Redis is unreachable: spend this replica's share of the replicas alive at last contact (None:
        never in contact). False if already in fallback."""
        if self.active:
            return False
        self.active = True
        hold = 0.0
        if replicas is None:
            # Never in contact: as many replicas as expected, or none granted for a while.
            replicas = self._expected_replicas or 1
            hold = 0.0 if self._expected_replicas else FIRST_CONTACT_GRACE
        if self._local is None:
            self._local = RateGovernor(
                max(1, int(rate) // replicas), interactive_share=self._interactive_share, margin=margin
            )
            self._local.start_after(hold)
        # else: still settling back from the last outage; that share, with its recent grants, goes on.
        # The share starts once the others count this replica silent (and pace without it), after the
        # slots they reserved before that, none more than HORIZON ahead, and one of its own spacings
        # after: then the share and the others' pace fit together into any sliding second, as the
        # shares of a fleet that all lost Redis do.
        self._local.start_after(SILENT_AFTER + HORIZON + self._local.spacing)
        log.warning(
            "fleet budget %s: Redis unreachable (%s); spending this replica's share, %d/s of %d/s "
            "(%d replicas)",
            self.name,
            why,
            self._local.qps,
            self._qps,
            replicas,
        )
        self._count("fallback")
        return True

    def rejoin(self, now: float) -> None:
        self.active = False
        self._settle_until = now + SETTLE
        if self._local is not None and self._local.grants == 0:
            # It sent nothing: nothing of it can share a sliding second with the fleet's schedule. Its
            # waiters go back to that schedule now, not once its start (a second and more) comes: a
            # Redis late by half a second under load otherwise cost every waiter that much again.
            self._local.drop_waiters(ShareDropped())
            self._local = None
        log.warning("fleet budget %s: Redis answers again; back on the fleet's schedule", self.name)
        self._count("shared")

    def sent_until(self, now: float) -> float:
        """While a share caps this replica, when its next slot is due (this replica's time; 0: no share):
        the fleet's schedule, fresh after an empty restart or stale, must not start before it."""
        if self._local is None or self._local.grants == 0:
            # Nothing sent on it: none of it can share a sliding second with the schedule, which need not
            # wait for its start (its callers go back to the schedule once Redis answers). Should it
            # grant while this replica's rejoining heartbeat is on its way, that one grant is all: the
            # share goes on capping the schedule's slots until it is settled back.
            return 0.0
        return now + self._local.next_grant_in()

    def rate_limited(self, sent_at: float) -> bool:
        """The backend said RequestLimitExceeded during the fallback: the share slows down (True)."""
        if self.active and self._local is not None:
            self._local.upstream_rate_limited(sent_at)
            return True
        return False

    async def aclose(self) -> None:
        if self._local is not None:
            await self._local.aclose()

    def _count(self, mode: str) -> None:
        if self._metrics is not None:
            self._metrics.fleet_transitions.add(1, {"moderation.backend": self.name, "moderation.mode": mode})
