"""Routes each request to its BizType's chain of backends, failing over down the chain.

Failover semantics: the chain's backends are tried in order, within the call's one deadline. A backend
is skipped while its circuit is open. A backend that is unavailable, times out, refuses the gateway's
credentials or account, or is rate- or quota-limited hands the request to the next one, and the answer
says `fallback`. A backend that judged the request itself invalid (a bad image, an unreachable URL)
ends the call at once: the next backend would say the same. Each backend but the last gets at most the
time left less a reserve for the next one. When every backend has failed, the route either returns the
last error or, if configured to fail closed, a REVIEW marked `unmoderated`. A failure is never a PASS.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import urllib.parse
from dataclasses import dataclass, field, replace

from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse, Suggestion

from backends.base import Backend, Fingerprint
from backends.errors import BackendError, Kind
from backends.image_limits import ImageLimits
from service.auth import CALLER
from service.circuit import CircuitBreaker, CircuitState
from service.deadlines import Deadline
from service.errors import KIND_POLICIES, CallFailure, CircuitEffect
from service.governor import Governor, Priority
from service.intake import intake_limit
from service.retry import Retrier
from service.routing_file import RouteConfig
from service.telemetry import Metrics, Telemetry

# The least time kept back for the next backend of a chain, and the multiple of its usual latency.
MIN_RESERVE = 0.5
RESERVE_LATENCIES = 2.0
# A timeout counts against a backend's circuit only when its attempt had this multiple of the backend's
# typical latency: less, and the gateway's queue or the caller's deadline took the time, not the backend.
TIMEOUT_FAULT_LATENCIES = 2.0
# A backend's latency before its first answer says otherwise (IMS answers in under a second).
UNKNOWN_LATENCY = 1.0
# A caller's share of a budget unused this long is closed (four times IMS's 15 s service timeout).
IDLE_CALLER_SHARE = 60.0


@dataclass
class Upstream:
    """One configured backend with its own rate budget, retry loop and circuit."""

    backend: Backend
    governor: Governor
    retrier: Retrier
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)

    @property
    def name(self) -> str:
        return self.backend.name


@dataclass(frozen=True, eq=False)
class Route:
    """The route of a call, chosen once by `Router.route_for` and carried down to fitting, the verdict
    cache and the router: its options as the routing file declares them, and its chain of upstreams.

    One object per configured route, made when the router is built: a call's route is the object,
    compared by identity (a route's rate shares are keyed by it)."""

    options: RouteConfig
    chain: tuple[Upstream, ...]
    # What every backend of the chain takes: the request's image is checked and fitted against it.
    image_limits: ImageLimits

    @property
    def name(self) -> str:
        """The same on every replica reading the same routing file: a fleet's slices are keyed by it."""
        return _route_name(self.options)

    def fingerprints(self) -> tuple[Fingerprint, ...]:
        """What the chain's verdicts depend on; read per call, as a backend's fingerprint changes when
        it reloads a file its verdicts depend on."""
        return tuple([upstream.backend.fingerprint for upstream in self.chain])

    def first_latency(self) -> float:
        """What a call on the chain's first backend typically takes (UNKNOWN_LATENCY before it answered)."""
        return self.chain[0].retrier.latency.seconds or UNKNOWN_LATENCY


class Router:
    def __init__(
        self,
        upstreams: list[Upstream],
        routes: list[RouteConfig],
        default: RouteConfig,
        *,
        metrics: Metrics | None = None,
        caller_share: float | None = None,
    ) -> None:
        self.upstreams = {upstream.name: upstream for upstream in upstreams}
        self._metrics = metrics or Telemetry.off().metrics
        for upstream in upstreams:
            upstream.breaker.report_as(upstream.name, self._metrics)
        self._routes = [self._resolved(config) for config in routes]
        self._default = self._resolved(default)
        self._exact: dict[str, Route] = {}
        for route in self._routes:
            for name in route.options.biz_types:
                if not _is_pattern(name):
                    # Of two routes naming one BizType, the first wins, as for patterns.
                    self._exact.setdefault(name, route)
        self._patterns = [
            (route, patterns)
            for route in self._routes
            if (patterns := tuple(p for p in route.options.biz_types if _is_pattern(p)))
        ]
        # A governor per (route, backend) for routes limited to a share of their backends' budgets,
        # passed before the backend's own governor, which keeps the account's total within its limit.
        self._shares = {
            (route, upstream.name): self._slice(upstream.name, share, f"route:{route.name}")
            for route in self.routes
            if (share := route.options.rate_share) is not None
            for upstream in route.chain
        }
        # Per caller, made on a caller's first call, closed once idle for IDLE_CALLER_SHARE: with mutual
        # TLS any certificate name may call, and each share of a fleet budget writes to Redis.
        self._caller_share = caller_share
        self._caller_shares: dict[tuple[str, str], Governor] = {}
        self._caller_used: dict[tuple[str, str], float] = {}
        self._next_sweep = 0.0
        self._closing: set[asyncio.Task[None]] = set()

    @classmethod
    def single(
        cls, upstream: Upstream, *, metrics: Metrics | None = None, caller_share: float | None = None
    ) -> Router:
        return cls(
            [upstream], [], RouteConfig(chain=(upstream.name,)), metrics=metrics, caller_share=caller_share
        )

    @property
    def routes(self) -> tuple[Route, ...]:
        """Every route, the default last."""
        return (*self._routes, self._default)

    def _resolved(self, config: RouteConfig) -> Route:
        chain = tuple(self.upstreams[name] for name in config.chain)
        limits = functools.reduce(ImageLimits.within, (upstream.backend.image_limits for upstream in chain))
        return Route(config, chain, limits)

    def _slice(self, backend: str, share: float, name: str) -> Governor:
        return self.upstreams[backend].governor.share(share, name)

    def _shares_for(self, route: Route, backend: str) -> list[Governor]:
        share = self._shares.get((route, backend))
        shares = [share] if share is not None else []
        caller = CALLER.get()
        if self._caller_share is not None and caller:
            key = (caller, backend)
            if key not in self._caller_shares:
                self._caller_shares[key] = self._slice(backend, self._caller_share, f"caller:{caller}")
            shares.append(self._caller_shares[key])
            now = asyncio.get_running_loop().time()
            self._caller_used[key] = now
            self._close_idle_caller_shares(now)
        return shares

    def _close_idle_caller_shares(self, now: float) -> None:
        """Closes the caller shares no call used for IDLE_CALLER_SHARE (longer than any call lasts, so
        none is waiting on them); looked at a few times per that period."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + IDLE_CALLER_SHARE / 4
        for key, used in list(self._caller_used.items()):
            if now - used >= IDLE_CALLER_SHARE:
                del self._caller_used[key]
                closing = asyncio.create_task(self._caller_shares.pop(key).aclose())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)

    def route_for(self, biz_type: str) -> Route:
        """The BizType's route: the first naming it exactly, else the first whose pattern matches it."""
        exact = self._exact.get(biz_type)
        if exact is not None:
            return exact
        for route, patterns in self._patterns:
            if any(fnmatch.fnmatchcase(biz_type, p) for p in patterns):
                return route
        return self._default

    @property
    def paced_by(self) -> Upstream:
        """The backend whose pace the intake follows: the default route's first."""
        return self._default.chain[0]

    def intake_limit(self) -> int:
        """How many calls and items this replica takes in now (`service.intake`): what the default
        route's first backend's pace, this replica's part of it, serves within the intake's horizon."""
        upstream = self.paced_by
        typical = upstream.retrier.latency.seconds
        if not typical:
            # Before the first answer neither the latency nor the competition is known: a peer starting
            # its load a moment later halves this replica's part, and a horizon's queue taken in on the
            # whole pace then waits twice as long (the many-callers test's items timed out on it).
            return intake_limit(upstream.governor.replica_pace, UNKNOWN_LATENCY, horizon=0.0)
        return intake_limit(upstream.governor.replica_pace, typical)

    def intake_weight(self, caller: str) -> float:
        """A caller's weight in the intake: its part of the pace here (`Governor.caller_weight`)."""
        return self.paced_by.governor.caller_weight(caller)

    def concurrency(self) -> int | None:
        """How many calls the default route's first backend works on at once, if it is bounded."""
        return self._default.chain[0].backend.concurrency

    def can_answer(self) -> bool:
        """Whether some route has a backend whose circuit is not open (health stays SERVING)."""
        return any(
            upstream.breaker.state is not CircuitState.OPEN
            for route in self.routes
            for upstream in route.chain
        )

    async def moderate(
        self, request: ModerateImageRequest, route: Route, deadline: Deadline, priority: Priority
    ) -> ModerateImageResponse:
        """The answer of the first backend of the route's chain that gives one.

        Raises `CallFailure`: the last failure seen, or the router's own when no backend could be tried.
        """
        last_failure: CallFailure | None = None
        options = route.options
        for position, upstream in enumerate(route.chain):
            name = upstream.name
            if deadline.remaining() <= 0:
                break
            if not upstream.breaker.allow():
                last_failure = last_failure or _router_failure(_circuit_open(), name)
                continue
            try:
                result = await upstream.retrier.moderate(
                    request,
                    self._budget(route, position, deadline),
                    priority,
                    max_attempts=options.attempts,
                    shares=self._shares_for(route, name),
                )
            except CallFailure as failure:
                error = failure.error
                self._record(upstream, failure, deadline)
                if not KIND_POLICIES[error.kind].fails_over:
                    raise
                self._metrics.failovers.add(
                    1, {"moderation.backend": name, "moderation.reason": error.kind.value}
                )
                last_failure = failure
                continue
            except BaseException:
                upstream.breaker.record_abandoned()
                raise
            upstream.breaker.record_success()
            result.fallback = position > 0
            return result
        if options.on_failure == "review":
            return ModerateImageResponse(
                suggestion=Suggestion.SUGGESTION_REVIEW,
                label="Unmoderated",
                unmoderated=True,
                fallback=True,
                biz_type=request.biz_type,
                data_id=request.data_id,
            )
        no_time = BackendError(Kind.TIMEOUT, "no time was left to try any backend of the route")
        raise last_failure or _router_failure(no_time, route.chain[0].name)

    def _budget(self, route: Route, position: int, deadline: Deadline) -> Deadline:
        later = [upstream for upstream in route.chain[position + 1 :] if upstream.breaker.allow_peek()]
        if not later:
            return deadline
        remaining = deadline.remaining()
        reserve = min(remaining / 2, max(MIN_RESERVE, RESERVE_LATENCIES * later[0].retrier.latency.seconds))
        loop = asyncio.get_running_loop()
        return replace(deadline, expires_at=min(deadline.expires_at, loop.time() + remaining - reserve))

    async def aclose(self) -> None:
        for governor in (*self._shares.values(), *self._caller_shares.values()):
            await governor.aclose()
        await asyncio.gather(*self._closing)

    @staticmethod
    def _record(upstream: Upstream, failure: CallFailure, deadline: Deadline) -> None:
        error = failure.error
        effect = KIND_POLICIES[error.kind].circuit
        if effect is CircuitEffect.NONE or (
            error.kind is Kind.TIMEOUT and not _had_time(upstream, failure, deadline)
        ):
            # Nothing reached the backend, or the attempt was starved of time (by the gateway's queue or
            # the caller's short deadline): neither says anything about the backend's health.
            upstream.breaker.record_abandoned()
        elif effect is CircuitEffect.FAILURE:
            upstream.breaker.record_failure(error.kind.value)
        else:
            upstream.breaker.record_success()


def _had_time(upstream: Upstream, failure: CallFailure, deadline: Deadline) -> bool:
    """Whether a timed-out attempt had time enough that the timeout is the backend's fault: twice what
    it typically takes; before any answer taught that, a deadline the gateway set, not the caller."""
    typical = upstream.retrier.latency.seconds
    if typical == 0.0 or failure.attempt_budget is None:
        return not deadline.set_by_caller
    return failure.attempt_budget >= TIMEOUT_FAULT_LATENCIES * typical


def _route_name(route: RouteConfig) -> str:
    """The same on every replica reading the same routing file: a fleet's slices are keyed by it. Each
    name is percent-encoded before the join, so `["a+b"]` and `["a", "b"]` never share a key."""
    return "+".join(urllib.parse.quote(name, safe="") for name in route.biz_types) or "default"


def _is_pattern(name: str) -> bool:
    return any(ch in name for ch in "*?[")


def _router_failure(error: BackendError, backend: str) -> CallFailure:
    """A failure of the router's own (an open circuit, no time left): `backend` was not called, so no
    attempt is counted."""
    return CallFailure(error, backend=backend, attempts=0)


def _circuit_open() -> BackendError:
    # The status names the backend ("backend 'x': ..."): the message need not.
    return BackendError(
        Kind.UNAVAILABLE,
        "its circuit is open after repeated failures; it was not called",
        upstream_code="CircuitOpen",
    )
