"""What `python -m bench` runs: named sections, each measured once per run and reported as one table,
and with `--json` as one JSON document (the format docsgen.benchmarks reads and documents)."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bench.report import Figure, as_json

R = TypeVar("R")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Section(Generic[R]):
    # The name `--only` selects it by.
    name: str
    # What is measured and how, printed once before the first run.
    header: str
    # One run: takes the run's number (1, 2, ...), which seeds whatever the run generates.
    measure: Callable[[int, Progress], Awaitable[R]]
    # What the table leaves out, printed after each run.
    details: Callable[[int, R], str]
    figures: Sequence[Figure[R]]
    # The table of the runs' results, when not `report.table` of the figures.
    table: Callable[[Sequence[R]], str] | None = None
    # What else `--json` records of each run (failures by class, say), beside the figures.
    record: Callable[[R], Any] | None = None
    # The series the benchmark page's plots draw, from all the runs: {series: {label: [numbers]}}.
    series: Callable[[Sequence[R]], dict[str, Any]] | None = None


def section_json(section: Section[R], results: Sequence[R], command: str) -> dict[str, Any]:
    """The section's runs as one JSON document; `command` is what reproduces them."""
    recorded: dict[str, Any] = {
        "section": section.name,
        "command": command,
        "runs": len(results),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "measured_on": datetime.date.today().isoformat(),
        "figures": as_json(section.figures, results),
        "series": section.series(results) if section.series is not None else {},
    }
    if section.record is not None:
        recorded["records"] = [section.record(result) for result in results]
    return recorded
