"""Figures from raw results: per-run details, then one table of every run and the medians."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from bench.processes import BUDGET_QPS
from bench.run import RunResult, Sizes

# "Bounded by the window, not the length": the longer stream may cost allocator noise, not images.
RSS_RATIO_GOAL = 1.10


@dataclass(frozen=True)
class Figure:
    name: str
    unit: str
    value: Callable[[RunResult], float]
    goal: str = ""
    met: Callable[[float], bool] | None = None

    def format(self, value: float) -> str:
        if math.isnan(value):
            return "n/a"
        if self.unit == "%":
            return f"{value * 100:.1f} %"
        if self.unit == "ms":
            return f"{value * 1000:.0f} ms"
        if self.unit == "MiB":
            return f"{value / 2**20:.0f} MiB"
        if self.unit == "x":
            return f"{value:.2f}x"
        if self.unit == "cores":
            return f"{value:.2f} cores"
        return f"{value:.0f}"


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def figures(sizes: Sizes) -> list[Figure]:
    short, long = sizes.rss_lengths
    return [
        Figure(
            "gateway throughput / budget (first request to last answer)",
            "%",
            lambda r: r.gateway.stream.wall_throughput / BUDGET_QPS,
            ">= 97 %",
            lambda v: v >= 0.97,
        ),
        Figure(
            "gateway throughput / budget (first to last answer)",
            "%",
            lambda r: r.gateway.stream.steady_throughput / BUDGET_QPS,
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
            lambda r: _ratio(r.gateway.stream.wall_throughput, r.baseline.throughput),
        ),
        Figure("unary p50, idle", "ms", lambda r: r.gateway.idle.percentile(0.5)),
        Figure("unary p50, while streaming", "ms", lambda r: r.gateway.loaded.percentile(0.5)),
        Figure(
            "unary p50 while streaming / idle",
            "x",
            lambda r: _ratio(r.gateway.loaded.percentile(0.5), r.gateway.idle.percentile(0.5)),
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
            lambda r: _ratio(r.memory[1].peak_rss, r.memory[0].peak_rss),
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


def table(sizes: Sizes, results: list[RunResult]) -> str:
    rows = [["figure", *(f"run {n}" for n in range(1, len(results) + 1)), "median", "goal", "met"]]
    for figure in figures(sizes):
        values = [float(figure.value(result)) for result in results]
        median = statistics.median(values)
        verdict = ""
        if figure.met is not None:
            met_runs = sum(figure.met(v) for v in values)
            verdict = f"{'met' if figure.met(median) else 'NOT MET'} ({met_runs}/{len(values)} runs)"
        rows.append([figure.name, *map(figure.format, values), figure.format(median), figure.goal, verdict])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def missed_goals(sizes: Sizes, results: list[RunResult]) -> list[str]:
    """Names of the figures whose median misses its goal."""
    return [
        figure.name
        for figure in figures(sizes)
        if figure.met is not None
        and not figure.met(statistics.median(float(figure.value(r)) for r in results))
    ]
