"""The streaming section: the gateway against IMS's rate limit, its figures and per-run details."""

from __future__ import annotations

import functools

from bench.report import Figure, ratio
from bench.run import FULL, QUICK, RunResult, Sizes, measure
from bench.sections import Progress, Section
from testbed.processes import BUDGET_QPS, EMULATOR_LATENCY

# "Bounded by the window, not the length": the longer stream may cost allocator noise, not images.
RSS_RATIO_GOAL = 1.10
# The gateway's defaults (service/settings.py), which every run uses: processes.py clears MODERATION_*.
# Copied rather than imported, so this process never loads the gateway and its backends.
DEFAULT_STREAM_WINDOW = "128 items and 64 MiB of images per stream (MODERATION_STREAM_MAX_IN_FLIGHT[_BYTES])"
DEFAULT_INTERACTIVE_SHARE = "50 % of the budget for unary calls while batch items wait"


def section(quick: bool) -> Section[RunResult]:
    sizes = QUICK if quick else FULL
    return Section(
        name="streaming",
        header=_header(sizes),
        measure=functools.partial(_measure, sizes),
        details=run_details,
        figures=figures(sizes),
    )


async def _measure(sizes: Sizes, number: int, progress: Progress) -> RunResult:
    return await measure(sizes, progress)


def _header(sizes: Sizes) -> str:
    return "\n".join(
        [
            f"IMS emulator: {EMULATOR_LATENCY * 1000:.0f} ms latency, {BUDGET_QPS} requests/s limit",
            f"gateway defaults: {DEFAULT_STREAM_WINDOW}; {DEFAULT_INTERACTIVE_SHARE}",
            f"sizes: stream {sizes.stream_items} items, {sizes.unary_calls} unary calls per sample, "
            f"baseline sweep {sizes.sweep_items} items at {list(sizes.sweep_concurrencies)}, "
            f"memory streams of {sizes.rss_lengths[0]} and {sizes.rss_lengths[1]} images",
            "sustained throughput (the goal's measure) = results / (last answer - first answer); the "
            "'first request to last answer' row adds the first call's latency: the wall time a caller waits",
        ]
    )


def figures(sizes: Sizes) -> list[Figure[RunResult]]:
    short, long = sizes.rss_lengths
    return [
        # The goal is on sustained throughput, as the streaming issue sets it: by wall time the first
        # answer's ~0.8 s latency alone keeps a 30 s stream under 97.4 % however the budget is spent.
        Figure(
            "gateway throughput / budget (first to last answer)",
            "%",
            lambda r: r.gateway.stream.steady_throughput / BUDGET_QPS,
            ">= 97 %",
            lambda v: v >= 0.97,
        ),
        Figure(
            "gateway throughput / budget (first request to last answer)",
            "%",
            lambda r: r.gateway.stream.wall_throughput / BUDGET_QPS,
        ),
        Figure(
            "RequestLimitExceeded seen by the stream's client",
            "",
            lambda r: r.gateway.stream.rate_limited,
            "0",
            lambda v: v == 0,
        ),
        Figure(
            f"stream items answered exactly once (of {sizes.stream_items})",
            "",
            lambda r: r.gateway.stream.answered_once,
            "all",
            lambda v: v == sizes.stream_items,
        ),
        Figure("stream items answered with an error", "", lambda r: sum(r.gateway.stream.errors.values())),
        Figure("backend retries inside the gateway", "", lambda r: r.gateway.stream.upstream_retries),
        Figure("gateway CPU while streaming", "cores", lambda r: r.gateway.gateway_cores),
        Figure("bench CPU while streaming", "cores", lambda r: r.gateway.bench_cores),
        Figure("baseline: best concurrency (sweep)", "", lambda r: r.baseline.concurrency),
        Figure("baseline throughput / budget", "%", lambda r: r.baseline.throughput / BUDGET_QPS),
        Figure("baseline: RequestLimitExceeded seen", "", lambda r: r.baseline.rate_limited),
        Figure("baseline: items failed", "", lambda r: r.baseline.failed),
        Figure("baseline: bench CPU", "cores", lambda r: r.baseline.cpu_seconds / r.baseline.wall_seconds),
        Figure(
            "gateway / baseline throughput",
            "x",
            lambda r: ratio(r.gateway.stream.wall_throughput, r.baseline.throughput),
        ),
        Figure("unary p50, idle", "ms", lambda r: r.gateway.idle.percentile(0.5)),
        Figure("unary p50, while streaming", "ms", lambda r: r.gateway.loaded.percentile(0.5)),
        Figure(
            "unary p50 while streaming / idle",
            "x",
            lambda r: ratio(r.gateway.loaded.percentile(0.5), r.gateway.idle.percentile(0.5)),
            "<= 1.5x",
            lambda v: v <= 1.5,
        ),
        Figure("unary p90, idle", "ms", lambda r: r.gateway.idle.percentile(0.9)),
        Figure("unary p90, while streaming", "ms", lambda r: r.gateway.loaded.percentile(0.9)),
        Figure("unary calls made while streaming", "", lambda r: len(r.gateway.loaded.seconds)),
        Figure("unary calls failed", "", lambda r: r.gateway.idle.failures + r.gateway.loaded.failures),
        Figure(f"gateway peak RSS, {short} x 5 MB", "MiB", lambda r: r.memory[0].peak_rss),
        Figure(f"gateway peak RSS, {long} x 5 MB", "MiB", lambda r: r.memory[1].peak_rss),
        Figure(
            f"peak RSS {long} / {short} images",
            "x",
            lambda r: ratio(r.memory[1].peak_rss, r.memory[0].peak_rss),
            f"<= {RSS_RATIO_GOAL:.2f}x",
            lambda v: v <= RSS_RATIO_GOAL,
        ),
    ]


def run_details(number: int, result: RunResult) -> str:
    """What the table leaves out: the sweep, error breakdowns, exactly-once accounting, memory."""
    stream = result.gateway.stream
    lines = [f"run {number}:"]
    lines.append(
        f"  stream: {stream.sent} sent, {stream.answered} answered ({stream.results} results), "
        f"{stream.duplicates} duplicate, {stream.missing} missing, {stream.misattributed} misattributed; "
        f"errors {dict(stream.errors) or 'none'}; {stream.last_answer - stream.started:.1f} s"
        + (f"; call ended {stream.call_error}" if stream.call_error else "")
    )
    for base in [*result.sweep, result.baseline]:
        lines.append(
            f"  baseline c={base.concurrency:<4} {base.items} items in {base.wall_seconds:5.1f} s: "
            f"{base.throughput / BUDGET_QPS:6.1%} of budget, {base.rate_limited} RequestLimitExceeded, "
            f"{base.failed} failed, bench CPU {base.cpu_seconds / base.wall_seconds:.2f} cores"
        )
    for memory in result.memory:
        lines.append(
            f"  memory {memory.length} images: RSS {memory.idle_rss / 2**20:.0f} MiB idle, "
            f"peak {memory.peak_rss / 2**20:.0f} MiB; {memory.stream.results} results, "
            f"errors {dict(memory.stream.errors) or 'none'}"
            + (f"; call ended {memory.stream.call_error}" if memory.stream.call_error else "")
        )
    return "\n".join(lines)
