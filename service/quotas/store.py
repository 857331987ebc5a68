"""Where the counts live: the `QuotaStore` seam, and the in-process store of a gateway without Redis.

A reservation is all or nothing: every counter a call's quotas name is incremented, or none is (a hard
counter at its limit refuses the lot). Counters expire after their period, wherever they are kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from service.quotas.calendar import Clock

__all__ = ["Counter", "LocalStore", "QuotaStore", "Reservation", "StoreUnavailable"]


class StoreUnavailable(Exception):
    """The store could not answer (any failure or odd reply of Redis): the mode decides what follows."""


@dataclass(frozen=True)
class Counter:
    """One quota's count in one period: its (hashed) key, its limit, and how long it may live."""

    key: str
    limit: int
    hard: bool
    ttl: int


@dataclass(frozen=True)
class Reservation:
    """`granted`: every counter was incremented, `counts` after it; else `refused` is the index of the
    hard counter at its limit, and `counts` holds its count alone."""

    granted: bool
    counts: tuple[int, ...]
    refused: int = -1


class QuotaStore(Protocol):
    async def reserve(self, counters: Sequence[Counter]) -> Reservation: ...

    async def release(self, keys: Sequence[str]) -> None:
        """Gives back one unit of each counter (never below zero)."""

    async def read(self, keys: Sequence[str]) -> list[int]: ...

    async def add(self, counts: Mapping[str, tuple[int, int]]) -> None:
        """Adds `count` to each key, created with `ttl` if new: {key: (count, ttl)}."""

    async def aclose(self) -> None: ...


def reserve_in(counts: dict[str, int], counters: Sequence[Counter]) -> Reservation:
    """The reservation rule, on plain counts (the Redis script applies the same one)."""
    for index, counter in enumerate(counters):
        used = counts.get(counter.key, 0)
        if counter.hard and used + 1 > counter.limit:
            return Reservation(False, (used,), index)
    for counter in counters:
        counts[counter.key] = counts.get(counter.key, 0) + 1
    return Reservation(True, tuple(counts[c.key] for c in counters))


class LocalStore:
    """Counts in this process alone: exact for one gateway, per replica in a fleet without Redis."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._counts: dict[str, int] = {}
        self._expiry: dict[str, float] = {}

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, at in self._expiry.items() if at <= now]:
            del self._counts[key], self._expiry[key]

    async def reserve(self, counters: Sequence[Counter]) -> Reservation:
        self._expire()
        reservation = reserve_in(self._counts, counters)
        if reservation.granted:
            for counter in counters:
                self._expiry.setdefault(counter.key, self._clock() + counter.ttl)
        return reservation

    async def release(self, keys: Sequence[str]) -> None:
        for key in keys:
            if self._counts.get(key, 0) > 0:
                self._counts[key] -= 1

    async def read(self, keys: Sequence[str]) -> list[int]:
        self._expire()
        return [self._counts.get(key, 0) for key in keys]

    async def add(self, counts: Mapping[str, tuple[int, int]]) -> None:
        for key, (count, ttl) in counts.items():
            self._counts[key] = self._counts.get(key, 0) + count
            self._expiry.setdefault(key, self._clock() + ttl)

    async def aclose(self) -> None:
        return None
