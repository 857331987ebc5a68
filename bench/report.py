"""Tables from raw results: each figure's value in every run, the median, and whether it meets its goal."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

R = TypeVar("R")
T = TypeVar("T")


@dataclass(frozen=True)
class Figure(Generic[R]):
    name: str
    unit: str
    value: Callable[[R], float]
    goal: str = ""
    met: Callable[[float], bool] | None = None

    def format(self, value: float) -> str:
        if math.isnan(value):
            return "n/a"
        if self.unit == "%":
            return f"{value * 100:.1f} %"
        if self.unit == "ms":
            # Sub-100 ms figures (CPU per call, fast backends) need the decimal to be compared.
            return f"{value * 1000:.0f} ms" if value >= 0.1 else f"{value * 1000:.1f} ms"
        if self.unit == "us":
            return f"{value * 1e6:.1f} µs"
        if self.unit == "MiB":
            return f"{value / 2**20:.0f} MiB"
        if self.unit == "x":
            return f"{value:.2f}x"
        if self.unit == "cores":
            return f"{value:.2f} cores"
        if self.unit == "/s":
            return f"{value:.1f}/s"
        if self.unit == ".1":
            return f"{value:.1f}"
        if self.unit == ".3":
            return f"{value:.3f}"
        if self.unit == "s":
            return f"{value:.1f} s"
        return f"{value:.0f}"


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def share(part: int, whole: int) -> float:
    """`part / whole`, NaN for an empty class (the table shows n/a rather than a fake 0 %)."""
    return part / whole if whole else math.nan


def _verdict(figure: Figure[R], values: Sequence[float]) -> str:
    if figure.met is None:
        return ""
    met_runs = sum(figure.met(v) for v in values)
    return f"{'met' if figure.met(statistics.median(values)) else 'NOT MET'} ({met_runs}/{len(values)} runs)"


def table(figures: Sequence[Figure[R]], results: Sequence[R]) -> str:
    rows = [["figure", *(f"run {n}" for n in range(1, len(results) + 1)), "median", "goal", "met"]]
    for figure in figures:
        values = [float(figure.value(result)) for result in results]
        median = statistics.median(values)
        rows.append(
            [
                figure.name,
                *map(figure.format, values),
                figure.format(median),
                figure.goal,
                _verdict(figure, values),
            ]
        )
    return _aligned(rows)


def compared_table(figures: Sequence[Figure[T]], current: Sequence[T], baseline: Sequence[T]) -> str:
    """Each figure's runs and median on the current code, the baseline's median and the ratio of the two."""
    runs = [f"run {n}" for n in range(1, len(current) + 1)]
    rows = [["figure", *runs, "median", "baseline", "ratio", "goal", "met"]]
    for figure in figures:
        values = [float(figure.value(result)) for result in current]
        median = statistics.median(values)
        before = statistics.median(float(figure.value(result)) for result in baseline)
        rows.append(
            [
                figure.name,
                *map(figure.format, values),
                figure.format(median),
                figure.format(before),
                _times(ratio(median, before)),
                figure.goal,
                _verdict(figure, values),
            ]
        )
    return _aligned(rows)


def _times(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


def _aligned(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def missed_goals(figures: Sequence[Figure[R]], results: Sequence[R]) -> list[str]:
    """Names of the figures whose median misses its goal."""
    return [
        figure.name
        for figure in figures
        if figure.met is not None
        and not figure.met(statistics.median(float(figure.value(r)) for r in results))
    ]


def as_json(figures: Sequence[Figure[R]], results: Sequence[R]) -> list[dict[str, Any]]:
    """Each figure's value in every run, median, goal and verdict, as `--json` writes them (NaN, what
    could not be measured, as null)."""
    rows = []
    for figure in figures:
        values = [float(figure.value(result)) for result in results]
        median = statistics.median(values)
        rows.append(
            {
                "name": figure.name,
                "unit": figure.unit,
                "goal": figure.goal,
                "values": [_number(v) for v in values],
                "median": _number(median),
                "met": None if figure.met is None else bool(figure.met(median)),
            }
        )
    return rows


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value
