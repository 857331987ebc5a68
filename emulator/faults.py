"""Fault injection: what can go wrong with a call that IMS has accepted, and how one is chosen.

A fault is chosen for each request that reached moderation (authenticated, under the rate limit,
valid). First the `fail_next` FIFO is consumed, one entry per request, so tests can script exact
sequences; when it is empty every probability is rolled independently (the RNG is consumed the same
way on every request, so a `seed` gives a reproducible sequence) and the first kind that fired, in
`FAULT_KINDS` order, applies.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .errors import ERROR_CODE_PATTERN, ImsError

# Transport-level kinds first: when several fire at once the most disruptive one wins.
FAULT_KINDS = (
    "connection_reset",
    "hang",
    "http_5xx",
    "malformed_json",
    "rate_limit_burst",
    "internal_error",
    "model_call_failed",
)

# The kinds that are answered as ordinary IMS errors, and their code.
_CODE_OF_KIND = {
    "rate_limit_burst": "RequestLimitExceeded",
    "internal_error": "InternalError",
    "model_call_failed": "ResourceUnavailable.ModelCallFailed",
}


@dataclass(frozen=True)
class Fault:
    """One injected fault: a kind from FAULT_KINDS, or "error_code" for a bare IMS code."""

    kind: str
    code: str | None = None

    def error(self) -> ImsError | None:
        """The IMS error this fault answers, or None for the transport-level kinds."""
        return ImsError(self.code) if self.code is not None else None


def resolve(name: str) -> Fault:
    """A `fail_next` entry: a fault kind name, or any IMS error code such as "LimitExceeded"."""
    if name in FAULT_KINDS:
        return Fault(name, _CODE_OF_KIND.get(name))
    if ERROR_CODE_PATTERN.fullmatch(name):
        return Fault("error_code", name)
    raise ValueError(f"unknown fault {name!r}: use one of {', '.join(FAULT_KINDS)} or an IMS error code")


@dataclass
class Faults:
    """Probabilities (0..1) of each fault per admitted request, plus a scripted FIFO."""

    model_call_failed: float = 0.0
    internal_error: float = 0.0
    http_5xx: float = 0.0
    connection_reset: float = 0.0
    malformed_json: float = 0.0
    hang: float = 0.0
    rate_limit_burst: float = 0.0
    fail_next: list[str] = field(default_factory=list)
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for kind in FAULT_KINDS:
            probability = getattr(self, kind)
            if not 0.0 <= probability <= 1.0:
                raise ValueError(f"Faults.{kind} must be a probability in [0, 1], got {probability}")
        for name in self.fail_next:
            resolve(name)
        self._rng = random.Random(self.seed)

    def draw(self) -> Fault | None:
        """The fault for the next admitted request, if any. The caller serialises calls."""
        if self.fail_next:
            return resolve(self.fail_next.pop(0))
        fired = [kind for kind in FAULT_KINDS if self._rng.random() < getattr(self, kind)]
        return resolve(fired[0]) if fired else None
