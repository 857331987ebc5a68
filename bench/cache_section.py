"""The cache section: billed calls, wrong answers and wall time of a repeating stream over a fleet,
and the unary hit path against a bare grpc.aio server; its figures and per-run details."""

from __future__ import annotations

import functools

from bench import cache
from bench.cache import REPLICAS, CacheResult, Sizes
from bench.report import Figure, ratio
from bench.sections import Progress, Section
from testbed.processes import BUDGET_QPS, EMULATOR_LATENCY


def section(quick: bool) -> Section[CacheResult]:
    sizes = cache.QUICK if quick else cache.FULL
    return Section(
        name="cache",
        header=_header(sizes),
        measure=functools.partial(_measure, sizes),
        details=run_details,
        figures=figures(sizes),
    )


async def _measure(sizes: Sizes, number: int, progress: Progress) -> CacheResult:
    return await cache.measure(sizes, number, progress)


def _header(sizes: Sizes) -> str:
    return "\n".join(
        [
            f"IMS emulator (in this process): {EMULATOR_LATENCY * 1000:.0f} ms latency, {BUDGET_QPS} "
            "requests/s strict sliding second; a real redis-server",
            f"stream: {sizes.items} items, {sizes.distinct_share:.0%} distinct images (each once, the rest "
            f"Zipf s={cache.ZIPF_EXPONENT} repeats, shuffled), split over {REPLICAS} replicas streaming at "
            "once, sharing Redis (MODERATION_CACHE=redis); then the same with MODERATION_CACHE=off",
            "wrong answers: suggestion, label, sub-label, score or data_id differ from what the image's "
            "marker asks of the emulator",
            f"hit path: {cache.HIT_CONCURRENCY} unary calls in flight on one cached image, "
            f"{sizes.hit_rounds} x {sizes.hit_window:.0f} s windows each on the gateway "
            "(MODERATION_CACHE=memory, on its default uvloop), the same gateway on the asyncio loop, and "
            "a bare grpc.aio server (asyncio) sending the same answer, alternating",
        ]
    )


def figures(sizes: Sizes) -> list[Figure[CacheResult]]:
    return [
        Figure(
            "billed calls per item (cache on)",
            ".3",
            lambda r: r.cached.billed_per_item,
            f"<= {sizes.distinct_share + 0.01:.2f}",
            lambda v: v <= sizes.distinct_share + 0.01,
        ),
        Figure("wrong answers (cache on)", "", lambda r: r.cached.wrong, "0", lambda v: v == 0),
        Figure("items failed or unanswered (cache on)", "", lambda r: r.cached.failed, "0", lambda v: v == 0),
        Figure("wall time, cache on", "s", lambda r: r.cached.wall_seconds),
        Figure("wall time, cache off", "s", lambda r: r.uncached.wall_seconds),
        Figure("wall time on / off", "x", lambda r: ratio(r.cached.wall_seconds, r.uncached.wall_seconds)),
        Figure("billed calls per item (cache off)", ".3", lambda r: r.uncached.billed_per_item),
        Figure("wrong answers (cache off)", "", lambda r: r.uncached.wrong, "0", lambda v: v == 0),
        Figure("hit path: gateway calls/s", "/s", lambda r: r.hits.gateway_rate),
        Figure("hit path: bare grpc.aio server calls/s", "/s", lambda r: r.hits.echo_rate),
        Figure(
            "hit path: gateway / bare server",
            "%",
            lambda r: ratio(r.hits.gateway_rate, r.hits.echo_rate),
            ">= 70 %",
            lambda v: v >= 0.70,
        ),
        Figure("hit path: gateway on asyncio calls/s", "/s", lambda r: r.hits.asyncio_rate),
        Figure(
            "hit path: gateway on asyncio / bare server",
            "%",
            lambda r: ratio(r.hits.asyncio_rate, r.hits.echo_rate),
        ),
        Figure("hit path: gateway CPU per hit", "ms", lambda r: r.hits.cpu_per_hit),
        Figure("load average (1 min) at the start of the run", ".1", lambda r: r.load[0]),
    ]


def _phase_line(phase: cache.StreamPhase) -> str:
    errors: dict[str, int] = {}
    for stream in phase.streams:
        for label, count in stream.errors.items():
            errors[label] = errors.get(label, 0) + count
    return (
        f"  cache {phase.cache}: {phase.items} items ({phase.distinct} distinct), IMS billed {phase.billed} "
        f"({phase.billed_per_item:.3f} per item), {phase.rate_limited} RequestLimitExceeded, "
        f"{sum(s.cached for s in phase.streams)} answers cached, {phase.wrong} wrong, "
        f"errors {errors or 'none'}, wall {phase.wall_seconds:.1f} s"
    )


def run_details(number: int, result: CacheResult) -> str:
    hits = result.hits
    return "\n".join(
        [
            f"run {number}:",
            _phase_line(result.cached),
            _phase_line(result.uncached),
            "  hit path: "
            + ", ".join(
                f"{name} {s.images} calls in {s.seconds:.1f} s ({s.rate:.0f}/s"
                + (f", {s.cpu_per_image * 1000:.2f} ms CPU each)" if s.cpu_seconds else ")")
                for name, s in hits.served.items()
            )
            + f", {hits.failures} failed",
            f"  load average (1 min): {result.load[0]:.1f} at the start, {result.load[1]:.1f} at the end",
        ]
    )
