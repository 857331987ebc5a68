"""The gRPC server, built by one function that production and tests share.

Shutdown sequence: health flips to NOT_SERVING (load balancers stop sending), an optional drain delay,
`server.stop(grace)` (no new calls; in-flight calls get up to `grace` seconds), then backends close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from moderation.v1 import moderation_service_pb2, moderation_service_pb2_grpc

from backends.base import Backend
from backends.options import BackendOptions
from common.files import MIB, UnreadableFile, read_regular_file
from service.admission import Admission
from service.auth import CallerAuth
from service.billing import metered
from service.cache import build_cache
from service.circuit import CircuitBreaker, CircuitState
from service.fitting.setup import build_fitting
from service.governor import FleetConnection, build_governor, default_budget_key
from service.observe import CostMetrics
from service.policy.gate import PolicyGate
from service.policy.metrics import PolicyMetrics
from service.policy.reload import PolicyWatcher
from service.quotas.attempt import attempt_quota
from service.quotas.build import build_quotas
from service.quotas.guard import QuotaGuard
from service.quotas.usage import UsageRpc
from service.retry import Retrier, RetryPolicy
from service.routing import Router, Upstream
from service.routing_file import BackendConfig
from service.servicer import ModerationServicer
from service.settings import ConfigError, Settings
from service.streaming import Window
from service.tasks.setup import Tasks, build_tasks
from service.telemetry import SCOPE, ServerSpans, Telemetry
from service.undecodable import RejectUndecodable

log = logging.getLogger(__name__)

SERVICE_NAME = moderation_service_pb2.DESCRIPTOR.services_by_name["ModerationService"].full_name
# Room past the largest image any backend takes, for the other fields and for sizes just over the
# limit, which then get a clear INVALID_ARGUMENT instead of a bare RESOURCE_EXHAUSTED.
RECEIVE_MARGIN_BYTES = 4 * 1024 * 1024
# grpc's own call limiter sits this many times above MODERATION_MAX_CONCURRENT_RPCS (see build_server).
BACKSTOP_FACTOR = 2
# Calls C-core holds that grpc's Python loop has not picked up yet (a burst waits there).
MAX_PENDING_CALLS = 10_000
# How often health follows the backends' circuits.
HEALTH_INTERVAL = 0.5
# A certificate chain or a key is a few KB.
PEM_FILE_LIMIT = MIB
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


class PortInUseError(RuntimeError):
    pass


def backend_health_name(backend: str) -> str:
    """The health-check service name that reports one backend's circuit."""
    return f"{SERVICE_NAME}/backend/{backend}"


@dataclass
class Gateway:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    servicer: ModerationServicer
    router: Router
    settings: Settings
    telemetry: Telemetry
    tasks: Tasks | None = None
    policy_watcher: PolicyWatcher | None = None
    quotas: QuotaGuard | None = None
    _watcher: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def backends(self) -> list[Backend]:
        return [upstream.backend for upstream in self.router.upstreams.values()]

    async def start(self) -> None:
        """Serve at once (health answers NOT_SERVING), and report SERVING once the backends are ready."""
        for service in ("", SERVICE_NAME):
            await self.health.set(service, NOT_SERVING)
        await self.server.start()
        for upstream in self.router.upstreams.values():
            upstream.governor.start()
        await asyncio.gather(*(backend.start() for backend in self.backends))
        if self.quotas is not None:
            await self.quotas.start()
        await self._update_health()
        self._watcher = asyncio.create_task(self._watch_health())
        if self.tasks is not None:
            self.tasks.start()
        if self.policy_watcher is not None:
            self.policy_watcher.start()

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL)
            await self._update_health()

    async def _update_health(self) -> None:
        """SERVING while any route can answer; each backend's own entry follows its circuit."""
        overall = SERVING if self.router.can_answer() else NOT_SERVING
        for service in ("", SERVICE_NAME):
            await self.health.set(service, overall)
        for name, upstream in self.router.upstreams.items():
            state = SERVING if upstream.breaker.state is not CircuitState.OPEN else NOT_SERVING
            await self.health.set(backend_health_name(name), state)

    async def stop(self) -> None:
        """The graceful shutdown sequence; in-flight calls finish within the grace period."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self.policy_watcher is not None:
            await self.policy_watcher.aclose()
        await self.health.enter_graceful_shutdown()
        if self.settings.drain_delay:
            await asyncio.sleep(self.settings.drain_delay)
        # Streams stop reading now and end once what they read is answered; unary calls just finish.
        self.servicer.begin_drain()
        grace = self.settings.shutdown_grace
        # Tasks already accepted are worked off within the same grace as the calls in flight.
        draining = [self.server.stop(grace), *([self.tasks.drain(grace)] if self.tasks is not None else [])]
        await _bounded("draining calls and tasks", asyncio.gather(*draining), grace + CLOSE_TIMEOUT)
        await _bounded("closing the router", self.router.aclose())
        await _bounded("closing the cache and fitting", self.servicer.aclose())
        for upstream in self.router.upstreams.values():
            await _bounded(f"closing backend {upstream.name!r}'s governor", upstream.governor.aclose())
            await _bounded(f"closing backend {upstream.name!r}", upstream.backend.aclose())
        if self.quotas is not None:
            await _bounded("closing the quota store", self.quotas.aclose())
        self.telemetry.shutdown()


# How long each part of the shutdown may take to close once the calls are drained: a part stuck on an
# unreachable Redis or endpoint is left behind, with a log line, so the process still exits in time.
CLOSE_TIMEOUT = 3.0


async def _bounded(what: str, closing: Awaitable[object], timeout: float = CLOSE_TIMEOUT) -> None:
    try:
        async with asyncio.timeout(timeout):
            await closing
    except TimeoutError:
        log.warning("shutdown: %s took over %.0f s; left behind", what, timeout)
    except Exception as error:
        log.warning("shutdown: %s failed (%s); going on", what, type(error).__name__)


# The mesh's plumbing, served beside the moderation service: load balancers and Kubernetes probe
# health, tools ask reflection. Their calls need no credentials and are not traffic worth a span.
OPEN_SERVICES = (health.SERVICE_NAME, reflection.SERVICE_NAME)


def fleet_connection(settings: Settings) -> FleetConnection | None:
    """Where fleet mode's Redis is, when it is configured."""
    if settings.redis_url is None:
        return None
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    ca_file = str(settings.redis_ca_file) if settings.redis_ca_file else None
    return FleetConnection(
        settings.redis_url.get_secret_value(),
        password=password,
        ca_file=ca_file,
        expected_replicas=settings.fleet_expected_replicas,
    )


def build_router(
    settings: Settings,
    backends: Sequence[Backend],
    telemetry: Telemetry,
    costs: CostMetrics | None = None,
    quotas: QuotaGuard | None = None,
    fleet: FleetConnection | None = None,
) -> Router:
    """Each backend with its own rate budget, retry loop and circuit, as its options declare them, routed
    as `settings` say; the calls of paid backends counted in `costs`."""
    configs = {b.name: b for b in settings.backends}
    upstreams = []
    for backend in backends:
        config = configs.get(backend.name)
        # A backend the settings do not name (tests build some) has every type's defaults.
        options = config.options if config is not None else BackendOptions()
        billing = options.billing()
        if costs is not None and billing is not None:
            backend = metered(backend, billing, costs)
        governor = build_governor(
            options.qps,
            name=backend.name,
            interactive_share=settings.interactive_share,
            metrics=telemetry.metrics,
            fleet=fleet,
            budget_key=_budget_key(config),
        )
        retrier = Retrier(
            backend,
            RetryPolicy(max_attempts=options.max_attempts),
            governor=governor,
            quota=attempt_quota(billing, quotas),
            billed=billing is not None,
            telemetry=telemetry,
        )
        breaker = CircuitBreaker(
            failure_threshold=settings.circuit_failures, reset_timeout=settings.circuit_reset
        )
        upstream = Upstream(backend, governor, retrier, breaker)
        telemetry.metrics.watch_upstream(upstream)
        upstreams.append(upstream)
    if settings.routes is None:
        return Router.single(upstreams[0], metrics=telemetry.metrics, caller_share=settings.caller_share)
    routes = settings.routes
    return Router(
        upstreams,
        list(routes.routes),
        routes.default,
        metrics=telemetry.metrics,
        caller_share=settings.caller_share,
    )


def _budget_key(config: BackendConfig | None) -> str | None:
    """The budget key the backend's options give, or one derived from the account it spends; None for a
    backend with no account (it has no shared budget)."""
    if config is None:
        return None
    account = config.options.account()
    return config.options.budget_key or (default_budget_key(config.type, account) if account else None)


def _pem(path: Path) -> bytes:
    """A TLS file's content; ConfigError if it is not a regular file of at most PEM_FILE_LIMIT bytes."""
    try:
        return read_regular_file(path, PEM_FILE_LIMIT)
    except UnreadableFile as problem:
        raise ConfigError([f"{path}: {problem}"]) from None


def _add_port(server: grpc.aio.Server, settings: Settings) -> int:
    if settings.tls_cert is None or settings.tls_key is None:
        return int(server.add_insecure_port(settings.listen))
    credentials = grpc.ssl_server_credentials(
        [(_pem(settings.tls_key), _pem(settings.tls_cert))],
        root_certificates=_pem(settings.tls_client_ca) if settings.tls_client_ca else None,
        require_client_auth=settings.tls_client_ca is not None,
    )
    return int(server.add_secure_port(settings.listen, credentials))


def build_server(
    settings: Settings, backends: Backend | Sequence[Backend], telemetry: Telemetry | None = None
) -> Gateway:
    """The server bound to `settings.listen` (port 0 picks a free one), not yet started."""
    telemetry = telemetry or Telemetry.off()
    backends = list(backends) if isinstance(backends, Sequence) else [backends]
    largest_image = max(backend.image_limits.max_bytes for backend in backends)
    # Answers, spans, metric labels and log lines leave through the telemetry's outward scrubber: it must
    # know these secrets (the backends built with this telemetry add what they learn later).
    telemetry.outward.add(settings.secrets)
    interceptors = []
    if telemetry.tracing:
        # The server span per RPC, continuing the caller's W3C traceparent and baggage.
        interceptors.append(ServerSpans(telemetry.tracer, untraced_services=OPEN_SERVICES))
    if settings.auth_tokens or settings.tls_client_ca:
        # Inside the tracing interceptor, so a refused call still has its span.
        interceptors.append(
            CallerAuth(
                settings.auth_tokens,
                mutual_tls=settings.tls_client_ca is not None,
                open_services=OPEN_SERVICES,
            )
        )
    # Innermost, so the tolerant deserializer it installs is the one grpc calls (the others copy it).
    interceptors.append(RejectUndecodable(telemetry.outward))
    server = grpc.aio.server(
        interceptors=interceptors,
        # The call cap is `Admission`'s (a logged, counted RESOURCE_EXHAUSTED with an ErrorInfo); grpc's
        # own limiter, which refuses before any interceptor runs, is only a backstop for the calls
        # admission never counts (health, reflection, refusals being sent).
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs * BACKSTOP_FACTOR,
        options=[
            # Otherwise a second server silently shares the port with a leftover one.
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", largest_image + RECEIVE_MARGIN_BYTES),
            # Calls one connection may have open at once (HTTP/2 SETTINGS); more wait in the client.
            ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
            # On (C-core's default), the server also counts streams the client already saw closed but
            # the server has not yet freed, and refuses new ones with RST_STREAM REFUSED_STREAM (the
            # caller's UNAVAILABLE "RST_STREAM error code 7"), although the client kept to the limit it
            # was told. Off, the limit is the one the client sees, and it queues calls beyond it.
            ("grpc.http.overload_protection", 0),
            # Calls that arrived but that grpc's Python loop has not picked up yet wait in C-core's
            # pending queue; past `max_pending_requests` (1000 by default) C-core drops them at
            # random, and their callers see CANCELLED without the gateway ever hearing of them.
            # With room for a burst (2,000 calls at once measured), every call reaches admission.
            ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
            ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS),
        ],
    )
    costs = CostMetrics(
        telemetry.meter_provider.get_meter(SCOPE),
        outward=telemetry.outward,
        callers=telemetry.metrics.callers,
    )
    # One description of fleet mode's Redis: the governors, the quotas and the cache each get their own
    # client of it.
    fleet = fleet_connection(settings)
    quotas = build_quotas(settings, fleet, telemetry)
    router = build_router(settings, backends, telemetry, costs, quotas, fleet)
    policy, policy_watcher = _policy(settings, telemetry)
    servicer = ModerationServicer(
        router,
        cache=build_cache(settings, costs, fleet),
        backend_timeout=settings.backend_timeout,
        stream_window=Window(
            min(settings.stream_max_in_flight, router.concurrency() or settings.stream_max_in_flight),
            settings.stream_max_in_flight_bytes,
        ),
        max_in_flight=settings.max_in_flight,
        admission=Admission(
            max_calls=settings.max_concurrent_rpcs,
            per_caller=settings.caller_max_in_flight,
            metrics=telemetry.metrics,
        ),
        telemetry=telemetry,
        stream_idle_timeout=settings.stream_idle_timeout,
        policy=policy,
        usage=UsageRpc(quotas, telemetry.outward),
        fitting=build_fitting(settings, router),
    )
    tasks = build_tasks(
        settings,
        router,
        servicer.moderate_task,
        servicer.validate_submission,
        telemetry.meter_provider.get_meter(SCOPE),
        telemetry.tracer,
        telemetry.outward,
    )
    servicer.serve_tasks(tasks.rpc)
    moderation_service_pb2_grpc.add_ModerationServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, *OPEN_SERVICES), server)
    try:
        port = _add_port(server, settings)
    except RuntimeError as exc:
        raise PortInUseError(f"cannot listen on {settings.listen}: {exc}") from None
    if port == 0:
        raise PortInUseError(f"cannot listen on {settings.listen}: the address is in use or invalid")
    return Gateway(
        server, port, health_servicer, servicer, router, settings, telemetry, tasks, policy_watcher, quotas
    )


def _policy(settings: Settings, telemetry: Telemetry) -> tuple[PolicyGate | None, PolicyWatcher | None]:
    """The policy's gate in the call path, and what reloads it when its file changes; none without one."""
    if settings.policy is None:
        return None, None
    gate = PolicyGate(
        settings.policy, PolicyMetrics(telemetry.meter_provider.get_meter(SCOPE), telemetry.outward)
    )
    source = settings.policy_source
    if source is None:
        return gate, None
    if source.deprecated:
        log.warning(
            "deprecated: the local backend's policy settings %s are folded into the gateway's policy; "
            "set MODERATION_POLICY_FILE instead (the next release ignores them)",
            ", ".join(source.deprecated),
            extra={"fields": {"deprecated": list(source.deprecated), "use": "MODERATION_POLICY_FILE"}},
        )
    return gate, PolicyWatcher(source, gate)
