"""The efficiency section: the gateway's CPU per call against a bare echo server, what tracing costs,
the peak RSS of a stream of 5 MB images, and a stream item against a unary call (issue 16)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from bench.efficiency import (
    ECHO,
    EXCHANGE,
    FULL,
    IMAGE_SIZES,
    OFF,
    ON,
    QUICK,
    SAMPLED,
    SAMPLED_RATIO,
    SMALL,
    STREAM,
    EfficiencyResult,
    EfficiencySizes,
    measure_efficiency,
)
from bench.report import Figure, ratio
from bench.sections import Progress, Section

OVER_ECHO_GOALS = {"17 KiB": 3.0, "900 KiB": 1.6, "5 MB": 1.6}
TRACED_SHARE_GOAL = 0.85
SAMPLED_SHARE_GOAL = 0.95
# Peak RSS while streaming 5 MB images: at most the idle RSS plus this many stream byte windows.
RSS_WINDOWS_GOAL = 2.5


def section(quick: bool) -> Section[EfficiencyResult]:
    sizes = QUICK if quick else FULL
    return Section(
        name="efficiency",
        header=_header(sizes),
        measure=functools.partial(_measure, sizes),
        details=_details,
        figures=_figures(),
        series=_series,
    )


def _series(results: Sequence[EfficiencyResult]) -> dict[str, Any]:
    """CPU per call, every round's, of the echo server and the untraced gateway by image size."""
    cpu: dict[str, list[float]] = {}
    for result in results:
        for (target, size), seconds in result.cpu.items():
            if target in (ECHO, OFF):
                cpu.setdefault(f"{'echo' if target == ECHO else 'gateway'} {size}", []).extend(seconds)
    return {"cpu_per_call_seconds": cpu}


async def _measure(sizes: EfficiencySizes, number: int, progress: Progress) -> EfficiencyResult:
    return await measure_efficiency(sizes, number, progress)


def _header(sizes: EfficiencySizes) -> str:
    in_flight = ", ".join(f"{n} at {size}" for size, n in sizes.concurrency.items())
    return "\n".join(
        [
            "a bare grpc.aio echo server, the same server making one IMS-shaped HTTP exchange per call (its "
            "body base64, SHA-256'd and POSTed by aiohttp, the answer read; no signing key, no parsing), and "
            "three gateways (tencent backend; tracing off, every call traced "
            "with OTLP/gRPC to a loopback receiver, 1 trace in "
            f"{round(1 / SAMPLED_RATIO)}) against one IMS emulator with no latency and no rate limit;",
            f"  unary ModerateImage with JPEGs of {', '.join(IMAGE_SIZES)} (calls in flight: {in_flight}); "
            f"{sizes.rounds} rounds of {sizes.window:.0f} s windows per target and size, alternating;",
            "  CPU per call from /proc/<pid>/stat of the measured process only; figures: medians by round",
            f"  stream: {sizes.stream_items} items of {SMALL} in one StreamModerateImages call per round;",
            f"  peak RSS: {sizes.memory_items} PNGs of 5 MB in one stream through a fresh gateway, against "
            "the emulator at IMS's latency (0.8 s) and limit: VmHWM after it, VmRSS before",
        ]
    )


def _cpu(target: str, size: str) -> Callable[[EfficiencyResult], float]:
    return lambda result: result.cpu_per_call(target, size)


def _exchange_over_echo(size: str) -> Callable[[EfficiencyResult], float]:
    return lambda result: result.over_echo(size, EXCHANGE)


def _over_echo(size: str) -> Figure[EfficiencyResult]:
    goal = OVER_ECHO_GOALS[size]
    return Figure(
        f"gateway / echo CPU per call, {size}",
        "x",
        lambda r: r.over_echo(size),
        f"<= {goal}x",
        lambda v: v <= goal,
    )


def _figures() -> list[Figure[EfficiencyResult]]:
    figures: list[Figure[EfficiencyResult]] = []
    for size in IMAGE_SIZES:
        figures += [
            Figure(f"echo CPU per call, {size}", "ms", _cpu(ECHO, size)),
            Figure(f"gateway CPU per call, {size}", "ms", _cpu(OFF, size)),
            _over_echo(size),
            Figure(f"one exchange CPU per call, {size}", "ms", _cpu(EXCHANGE, size)),
            # The floor under the goal above: no gateway on grpc.aio and aiohttp costs less.
            Figure(f"one exchange / echo CPU per call, {size}", "x", _exchange_over_echo(size)),
        ]
    return [
        *figures,
        Figure(f"gateway CPU per call traced, {SMALL}", "ms", lambda r: r.cpu_per_call(ON)),
        Figure(
            "throughput share, every call traced / off (CPU-bound)",
            "%",
            lambda r: r.traced_share(ON),
            f">= {TRACED_SHARE_GOAL:.0%}",
            lambda v: v >= TRACED_SHARE_GOAL,
        ),
        Figure(
            f"gateway CPU per call, 1 in {round(1 / SAMPLED_RATIO)} traced",
            "ms",
            lambda r: r.cpu_per_call(SAMPLED),
        ),
        Figure(
            f"throughput share, 1 in {round(1 / SAMPLED_RATIO)} traced / off",
            "%",
            lambda r: r.traced_share(SAMPLED),
            f">= {SAMPLED_SHARE_GOAL:.0%}",
            lambda v: v >= SAMPLED_SHARE_GOAL,
        ),
        Figure("peak RSS above idle, stream of 5 MB images", "MiB", lambda r: r.rss_growth),
        Figure(
            "peak RSS above idle / stream byte window",
            "x",
            lambda r: ratio(r.rss_growth, r.window_bytes),
            f"<= {RSS_WINDOWS_GOAL}x",
            lambda v: v <= RSS_WINDOWS_GOAL,
        ),
        Figure(f"gateway CPU per stream item, {SMALL}", "ms", lambda r: r.cpu_per_call(STREAM)),
        Figure(
            "stream item / unary call CPU",
            "x",
            lambda r: ratio(r.cpu_per_call(STREAM), r.cpu_per_call(OFF)),
        ),
        Figure("calls failed", "", lambda r: r.failures, "0", lambda v: v == 0),
    ]


def _details(number: int, result: EfficiencyResult) -> str:
    lines = [f"run {number}:"]
    for (target, size), samples in sorted(result.cpu.items()):
        rounds = ", ".join(f"{1000 * s:.2f}" for s in samples)
        calls = result.calls[(target, size)]
        lines.append(f"  {target:<8} {size:<8} {calls:>6} calls; ms of CPU per call by round: {rounds}")
    if result.memory is not None:
        memory = result.memory
        idle, peak = memory.idle_rss / 2**20, memory.peak_rss / 2**20
        answered = f"{memory.stream.results} of {memory.length}"
        lines.append(f"  memory: {answered} answered; idle {idle:.0f} MiB, peak {peak:.0f} MiB")
    return "\n".join(lines)
