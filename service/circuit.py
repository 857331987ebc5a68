"""A circuit breaker per backend: stop sending to a backend that keeps failing, probe it now and then,
and close again once it answers.

CLOSED: every call goes through; `failure_threshold` consecutive failures open the circuit.
OPEN: no call goes through for `reset_timeout` seconds; the chain's next backend answers instead.
HALF_OPEN: one probe call at a time goes through; success closes the circuit, failure opens it again.

Only the backend's own faults count (the router decides which: `service.routing`). Every transition
writes one log line and one count in `moderation.circuit.transitions`.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable

from service.telemetry import Metrics

log = logging.getLogger(__name__)


class CircuitState(enum.IntEnum):
    # The values are what the `moderation.circuit.state` gauge reports.
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        # The state last reported (logged and counted), and for which backend.
        self._reported = CircuitState.CLOSED
        self._name = ""
        self._metrics: Metrics | None = None

    def report_as(self, name: str, metrics: Metrics | None) -> None:
        """The backend whose circuit this is, named in its transitions' log lines and metric."""
        self._name = name
        self._metrics = metrics

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock() - self._opened_at >= self.reset_timeout:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    def allow(self) -> bool:
        """Whether a call may go to the backend now; a half-open circuit lets one probe through."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.HALF_OPEN and not self._probing:
            self._probing = True
            self._enter(CircuitState.HALF_OPEN)
            return True
        return False

    def allow_peek(self) -> bool:
        """Whether `allow()` would let a call through, without claiming the half-open probe."""
        state = self.state
        return state is CircuitState.CLOSED or (state is CircuitState.HALF_OPEN and not self._probing)

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False
        self._enter(CircuitState.CLOSED)

    def record_failure(self, why: str = "") -> None:
        self._failures += 1
        if self._probing or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            self._enter(CircuitState.OPEN, why)
        self._probing = False

    def record_abandoned(self) -> None:
        """The call ended without telling anything about the backend (cancelled, refused by us)."""
        self._probing = False

    def _enter(self, state: CircuitState, why: str = "") -> None:
        if state is self._reported:
            return
        self._reported = state
        if state is CircuitState.OPEN:
            log.warning(
                "circuit of backend %r opened after %d consecutive failures (last: %s); "
                "calls skip it for %g s",
                self._name,
                self._failures,
                why or "unknown",
                self.reset_timeout,
            )
        elif state is CircuitState.HALF_OPEN:
            log.warning("circuit of backend %r half-open: one probe call goes through", self._name)
        else:
            log.warning("circuit of backend %r closed: the backend answers again", self._name)
        if self._metrics is not None:
            self._metrics.circuit_transitions.add(
                1, {"moderation.backend": self._name, "moderation.circuit.state": state.name.lower()}
            )
