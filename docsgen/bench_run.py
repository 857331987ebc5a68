"""`python -m docsgen.bench_run [--only efficiency,fleet] [--runs N] [--quick]`: run bench sections and
write each one's figures, and the series its plots need, as JSON under docs/benchmarks/results/ (the
format docsgen.benchmarks reads and documents). `make bench-docs` runs it, then renders the pages."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench.__main__ import SECTIONS
from bench.efficiency import ECHO, OFF, EfficiencyResult
from bench.fleet import FleetResult
from bench.report import Figure
from bench.sections import Section
from docsgen.benchmarks import RESULTS
from testbed.processes import BUDGET_QPS

__all__ = ["main", "section_json"]


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _figure(figure: Figure[Any], results: Sequence[Any]) -> dict[str, Any]:
    values = [float(figure.value(result)) for result in results]
    median = statistics.median(values)
    return {
        "name": figure.name,
        "unit": figure.unit,
        "goal": figure.goal,
        "values": [_number(v) for v in values],
        "median": _number(median),
        "met": None if figure.met is None else bool(figure.met(median)),
    }


def _series(results: Sequence[Any]) -> dict[str, Any]:
    """What the plots need, from the results of the sections that keep it."""
    if all(isinstance(r, EfficiencyResult) for r in results):
        cpu: dict[str, list[float]] = {}
        for result in results:
            for (target, size), seconds in result.cpu.items():
                if target in (ECHO, OFF):
                    cpu.setdefault(f"{'echo' if target == ECHO else 'gateway'} {size}", []).extend(seconds)
        return {"cpu_per_call_seconds": cpu}
    if all(isinstance(r, FleetResult) for r in results):
        latency: dict[str, list[float]] = {}
        shares: dict[str, list[float]] = {}
        for result in results:
            for batch in result.batches:
                for phase, samples in (("idle", batch.idle), ("during the batch", batch.loaded)):
                    key = f"{batch.replicas} replicas, {phase}"
                    latency.setdefault(key, []).extend(s for sample in samples for s in sample.seconds)
                for stream in batch.streams:
                    span = stream.last_answer - stream.first_answer
                    share = (stream.results - 1) / span / BUDGET_QPS if span > 0 else math.nan
                    shares.setdefault(f"{batch.replicas} replicas", []).append(_number(share) or 0.0)
        return {"unary_latency_seconds": latency, "budget_share_per_replica": shares}
    return {}


def section_json(section: Section[Any], results: Sequence[Any], command: str) -> dict[str, Any]:
    return {
        "section": section.name,
        "command": command,
        "runs": len(results),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "measured_on": datetime.date.today().isoformat(),
        "figures": [_figure(figure, results) for figure in section.figures],
        "series": _series(results),
    }


async def _run(sections: list[Section[Any]], runs: int) -> list[list[Any]]:
    measured = []
    for section in sections:
        results = []
        for number in range(1, runs + 1):
            print(f"[{time.strftime('%H:%M:%S')}] {section.name}: run {number} of {runs}", flush=True)
            results.append(await section.measure(number, lambda message: print(message, flush=True)))
        measured.append(results)
    return measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m docsgen.bench_run", description=__doc__)
    parser.add_argument("--only", default="efficiency,fleet", help="comma-separated bench sections")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    sections = [SECTIONS[name](args.quick) for name in names]
    measured = asyncio.run(_run(sections, args.runs))
    RESULTS.mkdir(parents=True, exist_ok=True)
    for section, results in zip(sections, measured, strict=True):
        command = f"make bench-docs ONLY={section.name} RUNS={args.runs}" + (" QUICK=1" if args.quick else "")
        path = RESULTS / f"{section.name}.json"
        path.write_text(json.dumps(section_json(section, results, command), indent=1) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
