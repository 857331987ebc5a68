"""What `python -m bench` runs: named sections, each measured once per run and reported as one table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bench.report import Figure

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
