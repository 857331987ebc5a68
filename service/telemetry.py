"""Traces and metrics: providers and exporters from the standard `OTEL_*` variables, and the gateway's
instruments.

Tracing is configured only through OpenTelemetry's own variables: `OTEL_TRACES_EXPORTER` (`otlp`,
`console`, `none`; a comma-separated list), `OTEL_EXPORTER_OTLP_PROTOCOL` / `..._TRACES_PROTOCOL`
(`grpc` or `http/protobuf`), `OTEL_EXPORTER_OTLP_ENDPOINT` and the rest of the exporters' variables,
`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`. With no exporter named and no
OTLP endpoint set, tracing is off: a no-op provider, so a call pays next to nothing. Metrics are served
for Prometheus on `MODERATION_METRICS_LISTEN` and, when `OTEL_METRICS_EXPORTER` names `otlp`, pushed
over OTLP too.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from threading import Thread
from typing import Any, TypeAlias
from wsgiref.simple_server import WSGIServer

import grpc
from opentelemetry import metrics, propagate, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from prometheus_client import CollectorRegistry, start_http_server

from common.scrub import Scrubber
from service.interceptors import AroundCalls, Behaviour, Context, Method

SCOPE = "moderation-gateway"
DEFAULT_SERVICE_NAME = "moderation-gateway"
# Seconds: a cloud backend answers in ~0.8 s and at most 15 s; the default buckets stop at 10 s.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20)


# Distinct `caller` label values (MODERATION_METRICS_MAX_CALLERS' default).
DEFAULT_MAX_CALLERS = 100
OTHER = "other"


class BoundedLabel:
    """A metric label's values: the first `limit` distinct ones as themselves, any later one as `other`,
    so callers (or made-up values) cannot grow a metric's series without bound."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value not in self._seen:
            if len(self._seen) >= self._limit:
                return OTHER
            self._seen.add(value)
        return value


# A counter's attributes as `DictCounter` keys them: (name, value) pairs, always in the same order.
Labels: TypeAlias = tuple[tuple[str, str], ...]


class DictCounter:
    """A monotonic counter kept in a plain dict and read when metrics are collected.

    For counts taken on every call: an SDK counter's `add` costs about 6 µs (measured), more than
    the cache's whole lookup, while a dict increment costs a tenth of a microsecond.
    """

    def __init__(self, meter: metrics.Meter, name: str, *, unit: str, description: str) -> None:
        # Whole counts stay integers (an amount of 1 adds to 0); a price makes its sum a float.
        self._counts: dict[Labels, float] = {}
        meter.create_observable_counter(name, callbacks=[self._observe], unit=unit, description=description)

    def add(self, labels: Labels, amount: float = 1) -> None:
        self._counts[labels] = self._counts.get(labels, 0) + amount

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        # Collection runs on the exporter's thread: `copy` is one step under the GIL, so the loop
        # adding a new label set meanwhile cannot break the iteration.
        return [Observation(count, dict(labels)) for labels, count in self._counts.copy().items()]


class Metrics:
    """Every instrument the gateway records, documented in the README's metrics table."""

    def __init__(self, meter: metrics.Meter, *, max_callers: int = DEFAULT_MAX_CALLERS) -> None:
        # The `caller` label of every metric that has one.
        self.callers = BoundedLabel(max_callers)
        self.requests = DictCounter(
            meter,
            "moderation.requests",
            unit="{image}",
            description="Images moderated, by RPC method, status code, suggestion and label",
        )
        self.duration = meter.create_histogram(
            "moderation.duration",
            unit="s",
            description="End-to-end time per image, by method and status code",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.attempt_duration = meter.create_histogram(
            "moderation.backend.attempt.duration",
            unit="s",
            description="Time per backend attempt, by backend and outcome",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.retries = meter.create_counter(
            "moderation.backend.retries", unit="{retry}", description="Backend retries, by backend and reason"
        )
        self.governor_grants = meter.create_counter(
            "moderation.governor.grants",
            unit="{token}",
            description="Rate-governor slots granted, by priority",
        )
        self.governor_wait = meter.create_histogram(
            "moderation.governor.wait",
            unit="s",
            description="Time waited for a rate-governor slot, by priority",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.governor_rejections = meter.create_counter(
            "moderation.governor.rejections",
            unit="{call}",
            description="Calls refused because no slot could come before their deadline, by priority",
        )
        # A flood's every call is refused: counted in a dict, as the requests are.
        self.admission_refusals = DictCounter(
            meter,
            "moderation.admission.refusals",
            unit="{call}",
            description="Calls refused on arrival, past the server's call cap or their caller's bulkhead, "
            "by method and reason",
        )
        # Counted in a plain dict and read when metrics are collected: two measurements fewer per call.
        self.in_flight: Counter[str] = Counter(unary=0, stream=0)
        meter.create_observable_up_down_counter(
            "moderation.in_flight",
            callbacks=[self._observe_in_flight],
            unit="{image}",
            description="Images being moderated now, by kind (unary, stream)",
        )
        self.failovers = meter.create_counter(
            "moderation.failovers",
            unit="{call}",
            description="Calls handed to the next backend of their chain, by the backend that failed and why",
        )
        # Attempts not sent for want of time after the rate budget, and circuit transitions.
        self.budget_refusals = meter.create_counter(
            "moderation.budget.refusals",
            unit="{attempt}",
            description="Attempts not sent (nothing billed) because the time left after the rate budget "
            "did not cover the backend's typical latency, by backend and attempt (first, retry)",
        )
        self.circuit_transitions = meter.create_counter(
            "moderation.circuit.transitions",
            unit="{transition}",
            description="Circuit breaker transitions, by backend and the state entered "
            "(open, half_open, closed)",
        )
        self._upstreams: list[Any] = []
        meter.create_observable_gauge(
            "moderation.circuit.state",
            callbacks=[self._observe_circuits],
            description="Each backend's circuit: 0 closed, 1 half-open (probing), 2 open (skipped)",
        )
        meter.create_observable_gauge(
            "moderation.governor.rate",
            unit="{request}/s",
            callbacks=[self._observe_rates],
            description="The rate governor's pace by backend (below the budget after upstream limits)",
        )

        # Fleet mode (service.governor.fleet): each budget's view of the fleet.
        self._fleets: list[Any] = []
        self.fleet_transitions = meter.create_counter(
            "moderation.fleet.transitions",
            unit="{transition}",
            description="Fleet governor switches, by backend and the mode entered (fallback, shared)",
        )
        self.fleet_redis_duration = meter.create_histogram(
            "moderation.fleet.redis.duration",
            unit="s",
            description="Round-trip time of the fleet governor's Redis calls, by backend",
            explicit_bucket_boundaries_advisory=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
        )
        meter.create_observable_gauge(
            "moderation.fleet.replicas",
            callbacks=[self._observe_fleet("replicas")],
            unit="{replica}",
            description="Replicas sharing the backend's budget, as their heartbeats in Redis last said",
        )
        meter.create_observable_gauge(
            "moderation.fleet.fallback",
            callbacks=[self._observe_fleet("fallback")],
            description="1 while Redis is unreachable and this replica spends only its share, else 0",
        )
        meter.create_observable_gauge(
            "moderation.fleet.pace",
            unit="{request}/s",
            callbacks=[self._observe_fleet("rate")],
            description="The fleet-wide pace of the backend's budget, as Redis last said",
        )

    def watch_fleet(self, governor: Any) -> None:
        """Report a fleet governor's replicas, mode and pace (a `service.governor.FleetGovernor`)."""
        self._fleets.append(governor)

    def _observe_fleet(self, attribute: str) -> Any:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(float(getattr(g, attribute)), {"moderation.backend": g.name})
                for g in self._fleets
            ]

        return observe

    def watch_upstream(self, upstream: Any) -> None:
        """Report a backend's governor pace and circuit state (a `service.routing.Upstream`)."""
        self._upstreams.append(upstream)

    def _observe_in_flight(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(count, {"moderation.kind": kind}) for kind, count in self.in_flight.items()]

    def _observe_rates(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(u.governor.rate, {"moderation.backend": u.name}) for u in self._upstreams]

    def _observe_circuits(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(int(u.breaker.state), {"moderation.backend": u.name}) for u in self._upstreams]


@dataclass
class Telemetry:
    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider
    metrics: Metrics
    metrics_port: int | None = None
    # The gateway's one outward scrubber: answers, spans, metric labels and log lines pass through it. It
    # holds the configured secrets (`build_server`) and those the backends learn later (key rotation).
    outward: Scrubber = field(default_factory=Scrubber)
    _metrics_server: tuple[WSGIServer, Thread] | None = field(default=None, repr=False)
    _readers: list[MetricReader] = field(default_factory=list, repr=False)

    @property
    def tracer(self) -> trace.Tracer:
        return self.tracer_provider.get_tracer(SCOPE)

    @property
    def tracing(self) -> bool:
        return isinstance(self.tracer_provider, TracerProvider)

    def shutdown(self) -> None:
        if self._metrics_server is not None:
            server, thread = self._metrics_server
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
        if isinstance(self.tracer_provider, TracerProvider):
            self.tracer_provider.shutdown()
        if isinstance(self.meter_provider, MeterProvider):
            self.meter_provider.shutdown()

    @classmethod
    def off(cls) -> Telemetry:
        meter_provider = metrics.NoOpMeterProvider()
        return cls(trace.NoOpTracerProvider(), meter_provider, Metrics(meter_provider.get_meter(SCOPE)))


def setup_telemetry(
    environ: Mapping[str, str] | None = None,
    *,
    metrics_listen: str | None = None,
    span_processors: Iterable[SpanProcessor] = (),
    metric_readers: Iterable[MetricReader] = (),
    max_callers: int = DEFAULT_MAX_CALLERS,
    outward: Scrubber | None = None,
) -> Telemetry:
    """Providers built from the environment; tests add their own in-memory processors and readers.
    `outward`: the scrubber the log handler already uses, so every channel has the one."""
    env = os.environ if environ is None else environ
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", DEFAULT_SERVICE_NAME)})
    processors = [*span_processors, *(BatchSpanProcessor(e) for e in _span_exporters(env))]
    tracer_provider: trace.TracerProvider = trace.NoOpTracerProvider()
    if processors:
        sdk_tracer_provider = TracerProvider(resource=resource)
        for processor in processors:
            sdk_tracer_provider.add_span_processor(processor)
        tracer_provider = sdk_tracer_provider
    readers = [*metric_readers, *_metric_readers(env)]
    server, port = None, None
    if metrics_listen:
        registry = CollectorRegistry()
        # One instrumentation scope only: its labels on every series would be noise.
        readers.append(PrometheusMetricReader(registry=registry, scope_info_enabled=False))
        host, _, port_text = metrics_listen.rpartition(":")
        server = start_http_server(int(port_text), addr=host.strip("[]") or "0.0.0.0", registry=registry)
        port = server[0].server_port
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    return Telemetry(
        tracer_provider,
        meter_provider,
        Metrics(meter_provider.get_meter(SCOPE), max_callers=max_callers),
        port,
        outward or Scrubber(),
        server,
        readers,
    )


def _names(env: Mapping[str, str], variable: str) -> set[str]:
    return {n.strip().lower() for n in env.get(variable, "").split(",") if n.strip()}


def _span_exporters(env: Mapping[str, str]) -> list[SpanExporter]:
    names = _names(env, "OTEL_TRACES_EXPORTER")
    if not names and (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        names = {"otlp"}
    exporters: list[SpanExporter] = []
    if "otlp" in names:
        exporters.append(_otlp_span_exporter(env))
    if "console" in names:
        exporters.append(ConsoleSpanExporter())
    return exporters


def _protocol(env: Mapping[str, str], signal: str) -> str:
    return (
        env.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    )


def _otlp_span_exporter(env: Mapping[str, str]) -> SpanExporter:
    # The exporters read their endpoint, headers, certificates and timeouts from the OTEL_* variables.
    if _protocol(env, "TRACES") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


def _metric_readers(env: Mapping[str, str]) -> list[MetricReader]:
    if "otlp" not in _names(env, "OTEL_METRICS_EXPORTER"):
        return []
    if _protocol(env, "METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter

        return [PeriodicExportingMetricReader(GrpcExporter())]
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter

    return [PeriodicExportingMetricReader(HttpExporter())]


# The codes that are the server's fault (the semantic conventions' rule for a gRPC server span's status).
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class ServerSpans(AroundCalls):
    """One SERVER span per RPC but those of `untraced_services`, continuing the caller's W3C
    `traceparent` and `baggage`, with the `rpc.*` attributes.

    In place of opentelemetry-instrumentation-grpc, which built every call's attributes (its peer's
    address parsed among them) and wrapped its context in a proxy, sampled or not: with 1 call in 10
    sampled that cost as much CPU as tracing them all (1.9 against 1.5 ms a call untraced). Here an
    unsampled call pays for the propagators and a non-recording span only.
    """

    def __init__(self, tracer: trace.Tracer, *, untraced_services: Iterable[str] = ()) -> None:
        super().__init__(skip_services=untraced_services)
        self._tracer = tracer

    async def around(self, method: Method, behaviour: Behaviour, request: Any, context: Context) -> Any:
        carrier = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
        # An abort is how a handler answers an error, not an exception worth a stack trace on the span.
        with self._tracer.start_as_current_span(
            method.name,
            context=propagate.extract(carrier),
            kind=trace.SpanKind.SERVER,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            if span.is_recording():
                service, _, name = method.name.lstrip("/").partition("/")
                span.set_attributes({"rpc.system": "grpc", "rpc.service": service, "rpc.method": name})
            try:
                return await behaviour(request, context)
            finally:
                _record_code(span, context)


def _record_code(span: trace.Span, context: Context) -> None:
    if not span.is_recording():
        return
    code = context.code() or grpc.StatusCode.OK
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _SERVER_ERRORS:
        span.set_status(trace.StatusCode.ERROR, code.name)
