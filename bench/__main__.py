"""`python -m bench [--runs N] [--quick]`: measure, print each run, then the table of medians."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time

from bench import report
from bench.processes import BUDGET_QPS, EMULATOR_LATENCY
from bench.run import FULL, QUICK, RunResult, Sizes, measure

# The gateway's defaults (service/config.py), which every run uses: processes.py clears MODERATION_*.
# Copied rather than imported, so this process never loads the gateway and its backends.
DEFAULT_STREAM_WINDOW = "128 items and 64 MiB of images per stream (MODERATION_STREAM_MAX_IN_FLIGHT[_BYTES])"
DEFAULT_INTERACTIVE_SHARE = "50 % of the budget for unary calls while batch items wait"


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _header(sizes: Sizes, runs: int) -> str:
    return "\n".join(
        [
            f"moderation-gateway bench: {runs} run(s) on {os.cpu_count()} cores, "
            f"Python {platform.python_version()}",
            f"IMS emulator: {EMULATOR_LATENCY * 1000:.0f} ms latency, {BUDGET_QPS} requests/s limit",
            f"gateway defaults: {DEFAULT_STREAM_WINDOW}; {DEFAULT_INTERACTIVE_SHARE}",
            f"sizes: stream {sizes.stream_items} items, {sizes.unary_calls} unary calls per sample, "
            f"baseline sweep {sizes.sweep_items} items at {list(sizes.sweep_concurrencies)}, "
            f"memory streams of {sizes.rss_lengths[0]} and {sizes.rss_lengths[1]} images",
            "throughput = results / (last answer - first request), i.e. the wall time a caller waits; "
            "the 'first to last answer' row leaves out the first call's latency",
        ]
    )


async def _main(sizes: Sizes, runs: int) -> list[RunResult]:
    results = []
    for number in range(1, runs + 1):
        started = time.monotonic()
        _progress(f"run {number} of {runs}")
        results.append(await measure(sizes, _progress))
        print(report.run_details(number, results[-1]))
        _progress(f"run {number} took {time.monotonic() - started:.0f} s")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=1, help="repeat the whole measurement (default 1)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    sizes = QUICK if args.quick else FULL
    print(_header(sizes, args.runs), flush=True)
    started = time.monotonic()
    results = asyncio.run(_main(sizes, args.runs))
    print()
    print(f"results, {args.runs} run(s) on {os.cpu_count()} cores (median of the runs):")
    print(report.table(sizes, results))
    missed = report.missed_goals(sizes, results)
    print()
    print(
        f"total {time.monotonic() - started:.0f} s; "
        + (f"GOALS MISSED (median): {'; '.join(missed)}" if missed else "every goal met (median)")
    )
    # A report, not a gate: missing a goal is a finding, and the table says so.
    return 0


if __name__ == "__main__":
    sys.exit(main())
