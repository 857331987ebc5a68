"""The many-callers section (run with `--only fleet`): this tree against a baseline revision's."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import callers, source_tree
from bench.callers import (
    A_STREAMS,
    CALLERS,
    MANY_REPLICAS,
    ONE_REPLICA_STREAMS,
    SCALING,
    CallersResult,
    ModeResult,
    Phase,
    Sizes,
    TreeResult,
)
from bench.fleet import ARRIVAL_JITTER, Batch
from bench.fleet_section import batch_figures, pace_figures, sent_per_second
from bench.report import Figure, compared_table
from bench.sections import Progress, Section
from emulator.config import ARRIVAL_STAMPS
from testbed.processes import BUDGET_QPS, EMULATOR_LATENCY


def section(quick: bool, baseline: str) -> Section[CallersResult]:
    sizes = callers.QUICK if quick else callers.FULL
    tree_figures = figures()
    return Section(
        name="fleet: many callers",
        header=_header(sizes, baseline),
        measure=functools.partial(_measure, sizes, baseline),
        details=run_details,
        figures=[
            *(_of_tree(figure, lambda r: r.current, "") for figure in tree_figures),
            *(_of_tree(figure, lambda r: r.baseline, "baseline: ") for figure in tree_figures),
        ],
        table=functools.partial(_table, tree_figures),
        record=record,
        series=_series,
    )


def _series(results: Sequence[CallersResult]) -> dict[str, Any]:
    """The calls each of this tree's replicas sent per second in the last run, in each arrival mode,
    with many callers and with one stream per replica."""
    sent: dict[str, list[int]] = {}
    for mode, result in results[-1].current.modes.items():
        sent |= sent_per_second(
            f"{mode}: {MANY_REPLICAS} replicas x {len(CALLERS)} callers", result.many.batch
        )
        for count, phase in zip(SCALING, result.scaling, strict=True):
            sent |= sent_per_second(f"{mode}: {count} replica(s) on Redis, one stream each", phase.batch)
    return {"sent_per_second": sent}


async def _measure(sizes: Sizes, baseline: str, number: int, progress: Progress) -> CallersResult:
    progress(f"many callers: the baseline {baseline}'s tree (a git worktree under build/)")
    root: Path = source_tree.prepare(baseline)
    return await callers.measure(sizes, root, progress)


def _of_tree(
    figure: Figure[TreeResult], tree: Callable[[CallersResult], TreeResult], prefix: str
) -> Figure[CallersResult]:
    """`figure` of one tree's result; the baseline's has no goal (the goals are this tree's)."""
    goal = (figure.goal, figure.met) if not prefix else ("", None)
    return Figure(prefix + figure.name, figure.unit, lambda r: figure.value(tree(r)), *goal)


def _table(tree_figures: Sequence[Figure[TreeResult]], results: Sequence[CallersResult]) -> str:
    return compared_table(tree_figures, [r.current for r in results], [r.baseline for r in results])


def _header(sizes: Sizes, baseline: str) -> str:
    return "\n".join(
        [
            f"IMS emulator (in this process): {EMULATOR_LATENCY * 1000:.0f} ms latency, "
            f"{BUDGET_QPS} requests/s strict sliding second, 0-{ARRIVAL_JITTER * 1000:.0f} ms arrival "
            "jitter (unless 0), arrivals "
            f"stamped {' / '.join(ARRIVAL_STAMPS)}; a real redis-server; authenticated callers",
            f"{MANY_REPLICAS} replicas x {len(CALLERS)} callers x {sizes.images_per_stream} distinct "
            f"images; 1 replica x {ONE_REPLICA_STREAMS} streams of {sizes.images_per_stream}; "
            f"caller A {A_STREAMS} x "
            f"{sizes.a_items} on replica 1, B 1 x {sizes.b_items} on replica 2; one stream of "
            f"{sizes.lone_items} (no Redis); {sizes.scaling_items} split over {list(SCALING)} replicas on "
            "Redis",
            f"each scenario on this tree's gateways and on {baseline}'s (the baseline), same run; budget = "
            "(stream results + unary calls answered meanwhile) / (last answer - first answer) / budget; a "
            "caller's share = its results while both "
            "were busy; circuit transitions polled from each replica's /metrics (the circuit state gauge, "
            "and the transitions counter where the gateway has one)",
        ]
    )


def _busy_figures(
    label: str, pick: Callable[[ModeResult], Phase], *, unary: bool
) -> list[Figure[ModeResult]]:
    return [
        *batch_figures(label, _batch_of(pick), budget_goal=0.96, billed_goal=1.01, unary=unary),
        Figure(
            f"{label}: circuit transitions", "", lambda m: pick(m).circuit_transitions, "0", lambda v: v == 0
        ),
    ]


def _batch_of(pick: Callable[[ModeResult], Phase]) -> Callable[[ModeResult], Batch]:
    return lambda m: pick(m).batch


def _share(index: int) -> Callable[[ModeResult], float]:
    return lambda m: m.fair.shares(A_STREAMS)[index]


def _scaled(index: int) -> Callable[[ModeResult], Phase]:
    return lambda m: m.scaling[index]


def _mode_figures() -> list[Figure[ModeResult]]:
    rows = [
        *_busy_figures(f"{MANY_REPLICAS} replicas x {len(CALLERS)} callers", lambda m: m.many, unary=True),
        *_busy_figures(f"1 replica x {ONE_REPLICA_STREAMS} streams", lambda m: m.one_replica, unary=True),
    ]
    for index, name in enumerate(("A", "B")):
        rows.append(
            Figure(
                f"caller {name} ({A_STREAMS if name == 'A' else 1} stream(s)): share while both busy",
                "%",
                _share(index),
                ">= 45 %",
                lambda v: v >= 0.45,
            )
        )
    rows += pace_figures("1 replica, no Redis, 0 jitter", _batch_of(lambda m: m.lone_steady), 0.99)
    rows += pace_figures("1 replica, no Redis, jitter", _batch_of(lambda m: m.lone_jittery), 0.97)
    for index, count in enumerate(SCALING):
        rows += pace_figures(f"{count} replica(s) on Redis", _batch_of(_scaled(index)), 0.97)
    return rows


def figures() -> list[Figure[TreeResult]]:
    """Every scenario's figures, in each arrival mode, of one tree."""
    return [
        Figure(f"{mode}: {figure.name}", figure.unit, _in_mode(figure, mode), figure.goal, figure.met)
        for mode in ARRIVAL_STAMPS
        for figure in _mode_figures()
    ]


def _in_mode(figure: Figure[ModeResult], mode: str) -> Callable[[TreeResult], float]:
    return lambda tree: figure.value(tree.modes[mode])


def _phase_line(name: str, phase: Phase) -> str:
    batch = phase.batch
    upstream = batch.upstream
    return (
        f"    {name}: {sum(s.sent for s in batch.streams)} sent, {batch.results} results, failed "
        f"{dict(batch.failures) or 'none'}; IMS {upstream.requests} calls, {upstream.rate_limited} "
        f"RequestLimitExceeded, {upstream.billed} billed, at most {upstream.most_in_one_second} in a sliding "
        f"second; budget {batch.budget_spent:.1%}; circuit transitions {phase.circuit_transitions}"
    )


def _phases(result: ModeResult) -> dict[str, Phase]:
    named = {
        "many callers": result.many,
        f"1 replica x {ONE_REPLICA_STREAMS} streams": result.one_replica,
        "caller A and B": result.fair,
        "lone, 0 jitter": result.lone_steady,
        "lone, jitter": result.lone_jittery,
    }
    return named | {
        f"{n} replica(s) on Redis": phase for n, phase in zip(SCALING, result.scaling, strict=True)
    }


def record(result: CallersResult) -> dict[str, Any]:
    """Failed items by `CODE/REASON` (or what else became of them) and upstream counts, per phase."""
    return {
        tree.label: {
            mode: {
                name: {
                    "failures": dict(phase.batch.failures),
                    "circuit_transitions": phase.circuit_transitions,
                    "ims_calls": phase.batch.upstream.requests,
                    "ims_rate_limited": phase.batch.upstream.rate_limited,
                    "ims_billed": phase.batch.upstream.billed,
                    "results": phase.batch.results,
                }
                for name, phase in _phases(modes).items()
            }
            for mode, modes in tree.modes.items()
        }
        for tree in (result.current, result.baseline)
    }


def _tree_lines(tree: TreeResult) -> list[str]:
    lines = []
    for mode, result in tree.modes.items():
        lines.append(f"  {tree.label}, arrivals stamped {mode}:")
        lines += [_phase_line(name, phase) for name, phase in _phases(result).items()]
        shares = result.fair.shares(A_STREAMS)
        lines.append(f"    caller A / B shares while both busy: {shares[0]:.1%} / {shares[1]:.1%}")
    return lines


def run_details(number: int, result: CallersResult) -> str:
    return "\n".join([f"run {number}:", *_tree_lines(result.current), *_tree_lines(result.baseline)])
