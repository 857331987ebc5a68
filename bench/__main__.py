"""`python -m bench [--runs N] [--quick] [--only streaming,local,telemetry,hostile,fleet,cache,fit]`:
measure each section's runs, print each run, then one table of medians per section."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    async_section,
    cache_section,
    callers_section,
    efficiency_section,
    fit_section,
    fleet_section,
    hostile_section,
    local_section,
    policy_section,
    quota_section,
    report,
    source_tree,
    stream_section,
    telemetry_section,
)
from bench.sections import Section, section_json

SECTIONS: dict[str, Callable[[bool], Section[Any]]] = {
    "streaming": stream_section.section,
    "local": local_section.section,
    "telemetry": telemetry_section.section,
    "hostile": hostile_section.section,
    "fleet": fleet_section.section,
    "efficiency": efficiency_section.section,
    "cache": cache_section.section,
    "policy": policy_section.section,
    "fit": fit_section.section,
    "async": async_section.section,
    # Also part of `fleet`; alone, it takes seconds where `fleet` takes an hour.
    "quota": quota_section.section,
}


def _build(name: str, args: argparse.Namespace) -> list[Section[Any]]:
    """The named section, and with `fleet` its many-callers part (against `--baseline`) and the cost of
    quotas."""
    sections: list[Section[Any]] = [SECTIONS[name](args.quick)]
    if name == "fleet":
        sections.append(callers_section.section(args.quick, args.baseline))
        sections.append(quota_section.section(args.quick))
    return sections


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _sections(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(SECTIONS)}, got {text!r}"
        )
    return names


async def _measure(sections: list[Section[Any]], runs: int) -> list[list[Any]]:
    """Every run of each section in turn, in one event loop (gRPC's asyncio channels want one)."""
    measured = []
    for section in sections:
        print(f"\n== {section.name} ==\n{section.header}", flush=True)
        results = []
        for number in range(1, runs + 1):
            started = time.monotonic()
            _progress(f"{section.name}: run {number} of {runs}")
            results.append(await section.measure(number, _progress))
            print(section.details(number, results[-1]), flush=True)
            _progress(f"{section.name}: run {number} took {time.monotonic() - started:.0f} s")
        measured.append(results)
    return measured


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=1, help="repeat each section's measurement (default 1)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--only",
        type=_sections,
        default=list(SECTIONS),
        metavar="SECTIONS",
        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})",
    )
    parser.add_argument(
        "--baseline",
        default=source_tree.DEFAULT_BASELINE,
        metavar="REV",
        help="the revision whose gateways the fleet's many-callers part also measures, in the same run "
        f"(default {source_tree.DEFAULT_BASELINE}, main before issue 22)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="also write each section's figures, and the series its plots need, as PATH/<section>.json "
        "(the files docsgen.benchmarks reads; `make bench-docs` writes docs/benchmarks/results/)",
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    built = [(name, section) for name in args.only for section in _build(name, args)]
    sections = [section for _, section in built]
    print(
        f"moderation-gateway bench: {args.runs} run(s) on {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        flush=True,
    )
    started = time.monotonic()
    measured = asyncio.run(_measure(sections, args.runs))
    missed = []
    for section, results in zip(sections, measured, strict=True):
        print()
        print(f"{section.name}: results, {args.runs} run(s) on {os.cpu_count()} cores (median of the runs):")
        print(section.table(results) if section.table else report.table(section.figures, results))
        missed += [f"{section.name}: {name}" for name in report.missed_goals(section.figures, results)]
    if args.json is not None:
        args.json.mkdir(parents=True, exist_ok=True)
        for (name, section), results in zip(built, measured, strict=True):
            command = f"make bench ONLY={name} RUNS={args.runs}" + (" QUICK=1" if args.quick else "")
            path = args.json / f"{re.sub(r'[^a-z0-9]+', '-', section.name.lower()).strip('-')}.json"
            path.write_text(json.dumps(section_json(section, results, command), indent=1) + "\n")
            print(f"wrote {path}")
    print()
    print(
        f"total {time.monotonic() - started:.0f} s; "
        + (f"GOALS MISSED (median): {'; '.join(missed)}" if missed else "every goal met (median)")
    )
    # A report, not a gate: missing a goal is a finding, and the table says so.
    return 0


if __name__ == "__main__":
    sys.exit(main())
