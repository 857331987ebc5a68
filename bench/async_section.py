"""The asynchronous-tasks section (`--only async`): a burst of tasks over two replicas while a stream
runs, against the same stream without tasks."""

from __future__ import annotations

import functools

from bench import async_tasks
from bench.async_tasks import AsyncResult, Sizes
from bench.report import Figure, ratio
from bench.sections import Progress, Section
from testbed.processes import BUDGET_QPS, EMULATOR_LATENCY


def section(quick: bool) -> Section[AsyncResult]:
    sizes = async_tasks.QUICK if quick else async_tasks.FULL
    return Section(
        name="async",
        header=(
            f"IMS emulator: {EMULATOR_LATENCY * 1000:.0f} ms latency, {BUDGET_QPS}/s limit; two gateways "
            f"sharing the {BUDGET_QPS}/s budget through a real redis-server; a stream of "
            f"{sizes.stream_items} items on one and up to {sizes.unary_calls} unary calls on the other, "
            f"without tasks, then again with {sizes.tasks:,} SubmitModeration calls in a burst "
            f"({async_tasks.SUBMIT_CONCURRENCY} at once, alternating replicas), each called back on loopback"
        ),
        measure=functools.partial(_measure, sizes),
        details=run_details,
        figures=figures(),
    )


async def _measure(sizes: Sizes, number: int, progress: Progress) -> AsyncResult:
    return await async_tasks.measure(sizes, progress)


def figures() -> list[Figure[AsyncResult]]:
    return [
        Figure("submission p50", "ms", lambda r: r.submissions.percentile(0.5)),
        Figure("submission p99", "ms", lambda r: r.submissions.percentile(0.99)),
        Figure("time to drain (burst start to last callback)", "s", lambda r: r.drained),
        Figure("share of the budget spent", "%", lambda r: r.budget_share, ">= 96 %", lambda v: v >= 0.96),
        Figure(
            "stream throughput, without / with tasks",
            "x",
            lambda r: ratio(r.baseline.stream_throughput, r.loaded.stream_throughput),
            "<= 1.1",
            lambda v: v <= 1.1,
        ),
        Figure(
            "unary p50, with / without tasks",
            "x",
            lambda r: ratio(r.loaded.unary.percentile(0.5), r.baseline.unary.percentile(0.5)),
            "<= 1.1",
            lambda v: v <= 1.1,
        ),
        Figure("callbacks delivered per second", "/s", lambda r: r.callbacks_per_second),
        Figure("submissions failed", "", lambda r: r.submissions.failures, "0", lambda v: v == 0),
        Figure("Redis memory per finished task (bytes)", "", lambda r: r.memory.redis_bytes),
        Figure("Redis memory per million finished tasks (GB)", ".1", lambda r: r.memory.redis_bytes / 1000),
        Figure("memory per finished task without Redis (bytes)", "", lambda r: r.memory.process_bytes),
    ]


def run_details(number: int, result: AsyncResult) -> str:
    return (
        f"run {number}: burst answered in {result.burst:.1f} s, {result.callbacks} callbacks, "
        f"{result.billed} billed calls, the last {result.spending:.1f} s after the burst began "
        f"({result.rate_limited} refused over IMS's limit; budget spent {result.share_beside_stream:.1%} "
        f"beside the stream, {result.share_tasks_alone:.1%} by tasks alone after it); "
        f"stream {result.baseline.stream_throughput:.1f}/s alone, "
        f"{result.loaded.stream_throughput:.1f}/s with tasks; unary p50 "
        f"{result.baseline.unary.percentile(0.5) * 1000:.0f} ms alone, "
        f"{result.loaded.unary.percentile(0.5) * 1000:.0f} ms with tasks"
    )
