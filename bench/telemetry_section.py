"""The telemetry section: what tracing and metrics cost unary throughput: off, on, and on with head
sampling."""

from __future__ import annotations

import functools

from bench.report import Figure, ratio
from bench.sections import Progress, Section
from bench.telemetry_overhead import (
    OFF,
    ON,
    SAMPLED,
    SAMPLED_RATIO,
    TelemetryResult,
    TelemetrySizes,
    measure_overhead,
)

THROUGHPUT_SHARE_GOAL = 0.90
# A unary call's spans: the server span and the backend attempt's CLIENT span (README, Observability).
SPANS_PER_CALL = 2

FULL = TelemetrySizes(concurrency=32, warm_up=2.0, window=5.0, rounds=2)
QUICK = TelemetrySizes(concurrency=32, warm_up=1.0, window=2.0, rounds=1)


def section(quick: bool) -> Section[TelemetryResult]:
    sizes = QUICK if quick else FULL
    return Section(
        name="telemetry",
        header=_header(sizes),
        measure=functools.partial(_measure, sizes),
        details=_details,
        figures=_figures(),
    )


async def _measure(sizes: TelemetrySizes, number: int, progress: Progress) -> TelemetryResult:
    return await measure_overhead(sizes, progress)


def _header(sizes: TelemetrySizes) -> str:
    return "\n".join(
        [
            "three gateways (tencent backend, IMS_QPS high enough never to wait) against one IMS emulator "
            "with no latency and no rate limit:",
            "  off: OTEL_TRACES_EXPORTER=none, MODERATION_METRICS_LISTEN=off; on: OTLP/gRPC traces to a "
            "loopback receiver in this process, /metrics served and scraped once; sampled: as on, with "
            f"OTEL_TRACES_SAMPLER=parentbased_traceidratio and OTEL_TRACES_SAMPLER_ARG={SAMPLED_RATIO}",
            f"  unary ModerateImage with {sizes.concurrency} calls in flight: {sizes.warm_up:.0f} s warm-up "
            f"each, then {sizes.rounds} round(s) of {sizes.window:.0f} s windows (off on sampled, sampled "
            "on off, ...); calls/s over the windows",
        ]
    )


def _figures() -> list[Figure[TelemetryResult]]:
    return [
        Figure("unary calls/s, telemetry off", "/s", lambda r: r.calls_per_second(OFF)),
        Figure("unary calls/s, telemetry on", "/s", lambda r: r.calls_per_second(ON)),
        Figure("unary calls/s, telemetry on, sampled", "/s", lambda r: r.calls_per_second(SAMPLED)),
        Figure(
            "on / off calls/s",
            "%",
            lambda r: ratio(r.calls_per_second(ON), r.calls_per_second(OFF)),
            f">= {THROUGHPUT_SHARE_GOAL:.0%}",
            lambda v: v >= THROUGHPUT_SHARE_GOAL,
        ),
        Figure(
            f"sampled (1 trace in {round(1 / SAMPLED_RATIO)}) / off calls/s",
            "%",
            lambda r: ratio(r.calls_per_second(SAMPLED), r.calls_per_second(OFF)),
        ),
        Figure("gateway CPU per call, off", "ms", lambda r: r.cpu_per_call(OFF)),
        Figure("gateway CPU per call, on", "ms", lambda r: r.cpu_per_call(ON)),
        Figure("gateway CPU per call, sampled", "ms", lambda r: r.cpu_per_call(SAMPLED)),
        Figure("spans received", "", lambda r: sum(r.spans.values()), "> 0", lambda v: v > 0),
        Figure(
            f"spans received per traced call ({SPANS_PER_CALL} expected)", ".1", lambda r: r.spans_per_call
        ),
        Figure(
            "moderation_requests_total in the /metrics scrape",
            "",
            lambda r: r.scraped_requests,
            "> 0",
            lambda v: v > 0,
        ),
        Figure("unary calls failed", "", lambda r: r.failures, "0", lambda v: v == 0),
    ]


def _details(number: int, result: TelemetryResult) -> str:
    lines = [f"run {number}:"]
    for window in result.windows:
        lines.append(
            f"  {window.mode:<7} {window.calls} calls in {window.seconds:.1f} s "
            f"({window.calls / window.seconds:.0f}/s), {window.failures} failed; CPU: gateway "
            f"{window.gateway_cpu / window.seconds:.2f} cores, emulator "
            f"{window.emulator_cpu / window.seconds:.2f}, bench {window.bench_cpu / window.seconds:.2f}"
        )
    spans = ", ".join(f"{name} {count}" for name, count in result.spans.most_common())
    lines.append(f"  spans for {result.traced_calls} traced calls: {spans or 'none'}")
    return "\n".join(lines)
