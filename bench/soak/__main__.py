"""`python -m bench.soak [--items N] [--streams K] [--unary-rate R] [--quick] [--keep DIR]`: one soak
run, its details, then its figures against the goals."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench import report
from bench.soak.figures import details, figures, header
from bench.soak.plan import Plan
from bench.soak.run import soak

QUICK_ITEMS = 1000


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--items", type=_positive, default=10_000, help="items per stream (default 10000)")
    parser.add_argument("--streams", type=_positive, default=2, help="concurrent streams (default 2)")
    parser.add_argument("--unary-rate", type=float, default=3.0, help="unary calls per second (default 3)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_ITEMS} items per stream (instead of --items), for a smoke run",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep the processes' output and the gateway's last /metrics in DIR (default: deleted)",
    )
    args = parser.parse_args()
    if args.unary_rate <= 0:
        parser.error("--unary-rate must be positive")
    return args


def main() -> int:
    args = _arguments()
    plan = Plan(
        items=QUICK_ITEMS if args.quick else args.items, streams=args.streams, unary_rate=args.unary_rate
    )
    print(f"moderation-gateway soak on {os.cpu_count()} cores, Python {platform.python_version()}")
    print(header(plan), flush=True)
    with contextlib.ExitStack() as cleanup:
        if args.keep is None:
            folder = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        else:
            folder = args.keep
            folder.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        result = asyncio.run(soak(plan, folder, _progress))
        print()
        print(details(result))
        print()
        table = figures(result)
        print(f"soak results on {os.cpu_count()} cores (one run):")
        print(report.table(table, [result]))
        missed = report.missed_goals(table, [result])
        print()
        print(
            f"total {time.monotonic() - started:.0f} s; "
            + (f"GOALS MISSED: {'; '.join(missed)}" if missed else "every goal met")
            + (f"; logs kept in {folder}" if args.keep else "")
        )
    # A report, not a gate: a missed goal is a finding, and the table says so.
    return 0


if __name__ == "__main__":
    sys.exit(main())
