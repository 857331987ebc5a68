"""Revisions' gateways side by side, window by window in one process: a change's CPU per call against
its base's, steadier than two `make bench` runs on a shared machine (docs/guides/efficiency.md).

    .venv/bin/python -m bench.efficiency_ab --rounds 9 --window 2 . HEAD~3

Each revision is `.` (this working tree) or a git revision (checked out under build/, see
`bench.source_tree`); all run beside a bare echo server against one emulator with no latency and no
rate limit, untraced, and take turns in every round (reversed every other round). Printed: each
target's median CPU per call by round, its ratio to the echo's, and its calls per second.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from bench import source_tree
from bench.efficiency import (
    ECHO,
    IMAGE_SIZES,
    SMALL,
    EfficiencyResult,
    TargetStubs,
    echo_server,
    jpeg_of,
    measure_window,
    unary_load,
)
from bench.telemetry_overhead import UNLIMITED_QPS, closed_loop
from testbed import processes
from testbed.processes import REPO_ROOT, Credentials, Running

WORKING_TREE = "."
WARM_UP_SECONDS = 1.0


def _root(revision: str) -> Path:
    return REPO_ROOT if revision == WORKING_TREE else source_tree.prepare(revision)


async def compare(
    revisions: Sequence[str], *, rounds: int, seconds: float, size: str, concurrency: int
) -> EfficiencyResult:
    """`rounds` windows of `seconds` per target (the echo server and each revision's gateway)."""
    image = jpeg_of(IMAGE_SIZES[size], 1)
    credentials = Credentials.fresh()
    untraced = {"IMS_QPS": UNLIMITED_QPS, "OTEL_TRACES_EXPORTER": "none"}
    result = EfficiencyResult()
    with ExitStack() as stack:
        emulator = stack.enter_context(processes.emulator(credentials, latency=0.0, qps=None))
        targets: dict[str, Running] = {ECHO: stack.enter_context(echo_server())}
        for revision in revisions:
            targets[revision] = stack.enter_context(
                processes.tree_gateway(_root(revision), credentials, emulator.address, untraced)
            )
        async with TargetStubs(targets) as stubs:
            for name in targets:
                await closed_loop(stubs[name], image, concurrency, WARM_UP_SECONDS)
            order = list(targets)
            for number in range(rounds):
                for name in order if number % 2 == 0 else reversed(order):
                    load = unary_load(stubs[name], image, concurrency, seconds)
                    await measure_window(result, name, size, targets[name], load)
    return result


def table(result: EfficiencyResult, targets: Sequence[str], size: str, seconds: float) -> str:
    """One line per target: median ms of CPU per call, ratio to the echo's, calls per second, rounds."""
    echo_cpu = result.cpu_per_call(ECHO, size)
    lines = []
    for name in targets:
        samples = result.cpu[(name, size)]
        rate = result.calls[(name, size)] / (len(samples) * seconds)
        rounds = " ".join(f"{1000 * s:.2f}" for s in samples)
        cpu = statistics.median(samples)
        figures = f"{1000 * cpu:.3f} ms  {cpu / echo_cpu:.2f}x echo  {rate:.0f} calls/s"
        lines.append(f"{name:<12} {figures}  rounds: {rounds}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.efficiency_ab", description=__doc__.split("\n")[0])
    parser.add_argument("revisions", nargs="+", help=f"`{WORKING_TREE}` or git revisions")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--window", type=float, default=2.0, help="seconds per target and round")
    parser.add_argument("--size", choices=list(IMAGE_SIZES), default=SMALL)
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight")
    args = parser.parse_args()
    result = asyncio.run(
        compare(
            args.revisions,
            rounds=args.rounds,
            seconds=args.window,
            size=args.size,
            concurrency=args.concurrency,
        )
    )
    print(table(result, [ECHO, *args.revisions], args.size, args.window))


if __name__ == "__main__":
    main()
