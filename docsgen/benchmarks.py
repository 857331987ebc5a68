"""The benchmark pages: docs/benchmarks/index.md and its plots, generated from the benches' JSON under
docs/benchmarks/results/ and never edited by hand (`python -m docsgen.benchmarks`; a test fails when
the page no longer matches the JSON).

Each JSON file is one section's runs:
`{"section", "command", "runs", "cores", "python", "measured_on",
  "figures": [{"name", "unit", "goal", "values": [per run], "median", "met"}],
  "series": {name: {label: [numbers]}}}`. A series a plot needs and the JSON lacks is named on the page.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import Figure
from docsgen.blocks import DOCS
from testbed.processes import BUDGET_QPS

__all__ = ["PAGE", "PLOTS", "RESULTS", "main", "page", "plot_all"]

BENCHMARKS = DOCS / "benchmarks"
RESULTS = BENCHMARKS / "results"
IMAGES = BENCHMARKS / "img"
PAGE = BENCHMARKS / "index.md"


def _format(value: float | None, unit: str) -> str:
    # As the bench prints it in its own tables.
    return Figure("", unit, value=float).format(math.nan if value is None else value)


def _met(figure: Mapping[str, Any]) -> str:
    if figure["met"] is None:
        return ""
    return "met" if figure["met"] else "**not met**"


def _table(section: Mapping[str, Any]) -> list[str]:
    rows = ["| figure | runs | median | goal | |", "|---|---|---|---|---|"]
    for figure in section["figures"]:
        runs = ", ".join(_format(v, figure["unit"]) for v in figure["values"])
        median = _format(figure["median"], figure["unit"])
        rows.append(f"| {figure['name']} | {runs} | {median} | {figure['goal']} | {_met(figure)} |")
    return rows


@dataclass(frozen=True)
class Plot:
    section: str
    series: str
    file: str
    title: str
    # What the plot is drawn from, named on the page when the JSON lacks it.
    needs: str
    # Draws on a matplotlib figure, in axes of its own.
    draw: Callable[[Any, Mapping[str, Sequence[float]]], None]


def _scenarios(series: Mapping[str, Sequence[float]]) -> dict[str, dict[str, Sequence[float]]]:
    """`{"<scenario>: <line>": values}` as {scenario: {line: values}}, in the JSON's order."""
    grouped: dict[str, dict[str, Sequence[float]]] = {}
    for label, values in series.items():
        scenario, _, line = label.rpartition(": ")
        grouped.setdefault(scenario, {})[line] = values
    return grouped


def _sent_over_time(figure: Any, sent: Mapping[str, Sequence[float]]) -> None:
    """A panel per scenario: each replica's calls per second as IMS received them, their total and the
    account's limit."""
    scenarios = _scenarios(sent)
    rows = math.ceil(len(scenarios) / 2)
    figure.set_size_inches(10, 2.6 * rows + 0.8)
    panels = list(figure.subplots(rows, 2, sharex=True, sharey=True, squeeze=False).flat)
    for axes, (scenario, lines) in zip(panels, scenarios.items(), strict=False):
        for line, calls in lines.items():
            style = {"color": "black", "linewidth": 2} if line == "total" else {"linewidth": 1}
            axes.plot(range(len(calls)), calls, label=line, **style)
        axes.axhline(BUDGET_QPS, color="grey", linestyle="--", linewidth=1, label=f"limit, {BUDGET_QPS}/s")
        axes.set_title(scenario, fontsize="medium")
        axes.set_ylim(bottom=0)
        axes.legend(fontsize="x-small", loc="best")
    for axes in panels[len(scenarios) :]:  # the last of an odd count
        axes.set_visible(False)
    for axes in panels:
        axes.set_xlabel("second since the first call")
        axes.label_outer()
    panels[0].set_ylabel("calls IMS received per second")


def _latency(figure: Any, samples: Mapping[str, Sequence[float]]) -> None:
    axes = figure.subplots()
    for label, seconds in samples.items():
        if seconds:
            ordered = sorted(s * 1000 for s in seconds)
            axes.step(
                ordered, [(n + 1) / len(ordered) for n in range(len(ordered))], where="post", label=label
            )
    axes.set_xlabel("unary call latency (ms)")
    axes.set_ylabel("share of calls at or below")
    axes.legend(fontsize="small")


def _cpu(figure: Any, cpu: Mapping[str, Sequence[float]]) -> None:
    axes = figure.subplots()
    sizes = sorted(
        {label.split(" ", 1)[1] for label in cpu}, key=lambda s: statistics.median(cpu[f"echo {s}"])
    )
    for offset, target in ((-0.2, "gateway"), (0.2, "echo")):
        medians = [statistics.median(cpu[f"{target} {size}"]) * 1000 for size in sizes]
        axes.bar([x + offset for x in range(len(sizes))], medians, width=0.4, label=target)
    axes.set_xticks(range(len(sizes)), sizes)
    axes.set_ylabel("CPU per call (ms), median of the rounds")
    axes.set_yscale("log")
    axes.legend()


PLOTS = (
    Plot(
        "fleet",
        "sent_per_second",
        "fleet-budget.png",
        "Budget spent over time per replica",
        "calls per second each replica sent",
        _sent_over_time,
    ),
    Plot(
        "fleet: many callers",
        "sent_per_second",
        "callers-budget.png",
        "Budget spent over time per replica, many callers",
        "calls per second each replica sent",
        _sent_over_time,
    ),
    Plot(
        "fleet",
        "unary_latency_seconds",
        "fleet-latency.png",
        "Unary latency, idle and during a batch",
        "the unary calls' latencies",
        _latency,
    ),
    Plot(
        "efficiency",
        "cpu_per_call_seconds",
        "efficiency-cpu.png",
        "CPU per call: the gateway against the bare echo server",
        "CPU per call by target and image size",
        _cpu,
    ),
)


def _sections(results: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(results.glob("*.json"))]


def plot_all(folder: Path = IMAGES, results: Path = RESULTS) -> list[Path]:
    """Draw every plot whose series the JSON under `results` holds; the files written."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    by_name = {section["section"]: section for section in _sections(results)}
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for plot in PLOTS:
        series = by_name.get(plot.section, {}).get("series", {}).get(plot.series)
        if not series:
            continue
        figure = pyplot.figure(figsize=(7, 4))
        plot.draw(figure, series)
        figure.suptitle(plot.title)
        figure.tight_layout()
        figure.savefig(folder / plot.file, metadata={"Software": None})
        pyplot.close(figure)
        written.append(folder / plot.file)
    return written


def page(results: Path = RESULTS) -> str:
    sections = _sections(results)
    by_name = {section["section"]: section for section in sections}
    lines = [
        "<!-- Generated by `python -m docsgen.benchmarks` from results/*.json: never edit. -->",
        "# Benchmarks",
        "",
        "The benches' latest figures, generated from the JSON they write (`make bench-docs`), with plots.",
        "Each table gives every run's value, the median and whether the median meets its goal. Why the",
        "figures are what they are: [Design notes](../design-notes.md). `make bench` runs every section;",
        "`make bench -- --only fleet --runs 3` (or `make bench ONLY=fleet RUNS=3`, `QUICK=1` for a smoke",
        "run) runs one; `make soak` the soak.",
        "",
    ]
    if not sections:
        lines += ["No results yet: run `make bench-docs`.", ""]
    for section in sections:
        lines += [
            f"## {section['section']}",
            "",
            f"`{section['command']}`: {section['runs']} run(s) on {section['cores']} cores, Python "
            f"{section['python']}, measured on {section['measured_on']}.",
            "",
            *_table(section),
            "",
        ]
    lines += ["## Plots", ""]
    for plot in PLOTS:
        series = by_name.get(plot.section, {}).get("series", {}).get(plot.series)
        lines.append(f"### {plot.title}")
        lines.append("")
        if series:
            lines.append(f"![{plot.title}](img/{plot.file})")
        else:
            lines.append(f"Not drawn: the `{plot.section}` section's JSON has no {plot.needs}.")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    PAGE.write_text(page())
    for path in plot_all():
        print(f"drew {path.relative_to(DOCS.parent)}", file=sys.stderr)
    print(f"wrote {PAGE.relative_to(DOCS.parent)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
