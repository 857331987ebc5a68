"""The quota section (run with `--only fleet`, or alone with `--only quota`): Redis commands and latency a
quota adds per billed call."""

from __future__ import annotations

import functools

from bench import quota
from bench.quota import QuotaResult
from bench.report import Figure, ratio
from bench.sections import Progress, Section


def section(quick: bool) -> Section[QuotaResult]:
    calls = quota.QUICK_CALLS if quick else quota.CALLS
    return Section(
        name="quota",
        header=(
            f"IMS emulator: {quota.EMULATOR_LATENCY * 1000:.0f} ms latency, no rate limit; a real "
            f"redis-server; one gateway (fleet mode), {calls} unary calls of distinct images, "
            f"{quota.CONCURRENCY} in flight, with a hard quota governing the caller and without; Redis "
            "INFO commandstats before and after each phase (round trips: what clients sent), and MONITOR "
            "for the round trips that name a quota key"
        ),
        measure=functools.partial(_measure, calls),
        details=run_details,
        figures=figures(),
    )


async def _measure(calls: int, number: int, progress: Progress) -> QuotaResult:
    return await quota.measure(calls, progress)


def figures() -> list[Figure[QuotaResult]]:
    return [
        Figure(
            "Redis round trips a quota adds per billed call",
            ".3",
            lambda r: r.added_round_trips_per_billed_call,
            "<= 1",
            lambda v: v <= 1.0,
        ),
        Figure(
            "Redis round trips per billed call, with a quota", ".3", lambda r: r.governed.round_trips_per_call
        ),
        Figure(
            "Redis round trips per billed call, without", ".3", lambda r: r.ungoverned.round_trips_per_call
        ),
        Figure("p50 latency with a quota", "ms", lambda r: r.governed.latency.percentile(0.5)),
        Figure("p50 latency without", "ms", lambda r: r.ungoverned.latency.percentile(0.5)),
        Figure(
            "p50 with / without",
            "x",
            lambda r: ratio(r.governed.latency.percentile(0.5), r.ungoverned.latency.percentile(0.5)),
        ),
        Figure("calls failed", "", lambda r: r.governed.failed + r.ungoverned.failed, "0", lambda v: v == 0),
    ]


def run_details(number: int, result: QuotaResult) -> str:
    governed, ungoverned = result.governed, result.ungoverned
    return (
        f"run {number}: with a quota {governed.billed} billed, {governed.round_trips} round trips to "
        f"Redis ({governed.quota_round_trips} naming a quota key; {governed.redis_commands} commands run); "
        f"without {ungoverned.billed} billed, "
        f"{ungoverned.round_trips} ({ungoverned.redis_commands})"
    )
