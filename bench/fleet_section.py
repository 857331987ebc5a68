"""The fleet section: replicas sharing one budget through Redis, its figures and per-run details."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from bench import fleet
from bench.fleet import ARRIVAL_JITTER, OUTAGE, RECOVERY_WINDOW, REPLICA_COUNTS, Batch, FleetResult, Sizes
from bench.report import Figure
from bench.sections import Progress, Section
from testbed.processes import BUDGET_QPS, EMULATOR_LATENCY

R = TypeVar("R")


def section(quick: bool) -> Section[FleetResult]:
    sizes = fleet.QUICK if quick else fleet.FULL
    return Section(
        name="fleet",
        header=_header(sizes),
        measure=functools.partial(_measure, sizes),
        details=run_details,
        figures=figures(),
        series=_series,
    )


def sent_per_second(scenario: str, batch: Batch) -> dict[str, list[int]]:
    """`{"<scenario>: replica <n>" | "<scenario>: total" [| "<scenario>: not attributed"]: [calls per
    second]}`: the calls IMS received from each replica of `batch`, second by second."""
    sent = batch.sent
    series = {f"{scenario}: replica {n}": calls for n, calls in enumerate(sent.per_replica, start=1)}
    series[f"{scenario}: total"] = sent.total
    if any(sent.unattributed):
        series[f"{scenario}: not attributed"] = sent.unattributed
    return series


def _series(results: Sequence[FleetResult]) -> dict[str, Any]:
    """Unary latency idle and during each batch, of every run; the calls each replica sent per second,
    of the last run (a time series has no median)."""
    latency: dict[str, list[float]] = {}
    for result in results:
        for batch in result.batches:
            for phase, samples in (("idle", batch.idle), ("during the batch", batch.loaded)):
                key = f"{batch.replicas} replicas, {phase}"
                latency.setdefault(key, []).extend(s for sample in samples for s in sample.seconds)
    last = results[-1]
    sent: dict[str, list[int]] = {}
    for batch in last.batches:
        plural = "s" if batch.replicas > 1 else ""
        sent |= sent_per_second(f"{batch.replicas} replica{plural} on Redis", batch)
    sent |= sent_per_second(f"1 of {REPLICA_COUNTS[-1]} busy", last.busy_alone)
    sent |= sent_per_second("baseline: 2 replicas, no Redis", last.baseline)
    return {"unary_latency_seconds": latency, "sent_per_second": sent}


async def _measure(sizes: Sizes, number: int, progress: Progress) -> FleetResult:
    return await fleet.measure(sizes, progress)


def _header(sizes: Sizes) -> str:
    return "\n".join(
        [
            f"IMS emulator (in this process): {EMULATOR_LATENCY * 1000:.0f} ms latency, "
            f"{BUDGET_QPS} requests/s strict sliding second, 0-{ARRIVAL_JITTER * 1000:.0f} ms arrival "
            "jitter; a real redis-server",
            f"batches: {sizes.batch_items} items split over {list(REPLICA_COUNTS)} replicas streaming at "
            "once, "
            f"{sizes.unary_calls} unary calls per replica idle and during the batch; outage: 2 replicas x "
            f"{sizes.outage_items} items, Redis stopped {OUTAGE:.0f} s after {sizes.outage_after:.0f} s",
            "budget spent (sustained) = (stream results + unary calls answered meanwhile) / (last answer - "
            "first answer) / budget; unary ratio = the worst replica's p50 during the batch / its idle p50",
        ]
    )


def pace_figures(label: str, batch: Callable[[R], Batch], budget_goal: float) -> list[Figure[R]]:
    """RequestLimitExceeded per call and the budget spent, from first to last answer, of `batch(result)`."""
    return [
        Figure(
            f"{label}: RequestLimitExceeded per call",
            "%",
            lambda r: batch(r).upstream.rate_limited_per_call,
            "<= 0.1 %",
            lambda v: v <= 0.001,
        ),
        Figure(
            f"{label}: budget spent, sustained",
            "%",
            lambda r: batch(r).budget_spent,
            f">= {budget_goal * 100:.0f} %",
            lambda v: v >= budget_goal,
        ),
    ]


def batch_figures(
    label: str, batch: Callable[[R], Batch], *, budget_goal: float, billed_goal: float, unary: bool = True
) -> list[Figure[R]]:
    """The pace, the cost and what the clients saw of `batch(result)`."""
    rows = [
        *pace_figures(label, batch, budget_goal),
        Figure(
            f"{label}: billed calls per item",
            ".3",
            lambda r: batch(r).billed_per_item,
            f"<= {billed_goal:g}",
            lambda v: v <= billed_goal,
        ),
        Figure(
            f"{label}: client-visible errors", "", lambda r: batch(r).client_errors, "0", lambda v: v == 0
        ),
    ]
    if unary:
        rows.append(
            Figure(
                f"{label}: unary p50 during the batch / idle (worst replica)",
                "x",
                lambda r: batch(r).worst_unary_ratio,
                "<= 1.5x",
                lambda v: v <= 1.5,
            )
        )
    rows.append(
        Figure(
            f"{label}: most admitted in any sliding second",
            "",
            lambda r: batch(r).upstream.most_in_one_second,
        )
    )
    return rows


def _nth(index: int) -> Callable[[FleetResult], Batch]:
    return lambda result: result.batches[index]


def figures() -> list[Figure[FleetResult]]:
    rows: list[Figure[FleetResult]] = []
    for index, count in enumerate(REPLICA_COUNTS):
        label = f"{count} replica{'s' if count > 1 else ''}"
        rows += batch_figures(label, _nth(index), budget_goal=0.97, billed_goal=1.02)
    return [
        *rows,
        Figure(
            f"1 of {REPLICA_COUNTS[-1]} busy: its share of the budget",
            "%",
            lambda r: r.busy_alone.budget_spent,
            ">= 95 %",
            lambda v: v >= 0.95,
        ),
        Figure("outage: items lost or failed", "", lambda r: r.outage.lost_or_failed, "0", lambda v: v == 0),
        Figure(
            "outage: RequestLimitExceeded per call while Redis is down",
            "%",
            lambda r: r.outage.during.rate_limited_per_call,
            "<= 1 %",
            lambda v: v <= 0.01,
        ),
        Figure(
            f"outage: pace 2-{2 + RECOVERY_WINDOW:.0f} s after the restart / budget",
            "%",
            lambda r: r.outage.recovered_pace,
            ">= 95 %",
            lambda v: v >= 0.95,
        ),
        Figure("outage: RequestLimitExceeded, whole phase", "", lambda r: r.outage.whole.rate_limited),
        Figure(
            "baseline (per-replica governor), 2 replicas: RequestLimitExceeded per call",
            "%",
            lambda r: r.baseline.upstream.rate_limited_per_call,
        ),
        Figure("baseline, 2 replicas: client-visible errors", "", lambda r: r.baseline.client_errors),
        Figure("baseline, 2 replicas: billed calls per item", "x", lambda r: r.baseline.billed_per_item),
        Figure("baseline, 2 replicas: budget spent", "%", lambda r: r.baseline.budget_spent),
    ]


def _batch_line(name: str, batch: Batch) -> str:
    streams = batch.streams
    errors = dict(batch.failures)
    return (
        f"  {name}: {sum(s.sent for s in streams)} sent, {batch.results} results, errors {errors or 'none'}; "
        f"IMS {batch.upstream.requests} calls, {batch.upstream.rate_limited} RequestLimitExceeded, "
        f"{batch.upstream.billed} billed, at most {batch.upstream.most_in_one_second} in a sliding second; "
        f"unary p50 idle/loaded "
        + ", ".join(
            f"{idle.percentile(0.5) * 1000:.0f}/{loaded.percentile(0.5) * 1000:.0f} ms"
            for idle, loaded in zip(batch.idle, batch.loaded, strict=True)
        )
    )


def run_details(number: int, result: FleetResult) -> str:
    lines = [f"run {number}:"]
    for batch in result.batches:
        lines.append(_batch_line(f"{batch.replicas} replica(s)", batch))
    lines.append(_batch_line("1 busy, the rest idle", result.busy_alone))
    lines.append(_batch_line("baseline, 2 replicas", result.baseline))
    outage = result.outage
    lines.append(
        f"  outage: {sum(s.results for s in outage.streams)} results"
        f" of {sum(s.sent for s in outage.streams)}; "
        f"while down {outage.during.requests} calls, {outage.during.rate_limited} RequestLimitExceeded; "
        f"whole phase {outage.whole.rate_limited} RequestLimitExceeded, at most "
        f"{outage.whole.most_in_one_second} in a sliding second; pace after {outage.recovered_pace:.1%}"
    )
    return "\n".join(lines)
