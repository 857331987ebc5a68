"""The benchmark page is generated from the benches' JSON: an edited page, or JSON that changed without
the page, fails here; every plot the JSON has data for is drawn, and one it lacks data for says so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy
import pytest

from docsgen import benchmarks


def sections() -> dict[str, dict[str, object]]:
    """Each section's JSON by the section's name (what a plot names), not by its file's."""
    found = (json.loads(path.read_text()) for path in benchmarks.RESULTS.glob("*.json"))
    return {str(data["section"]): data for data in found}


def test_the_page_is_what_the_json_makes() -> None:
    assert benchmarks.PAGE.read_text() == benchmarks.page(), "run `python -m docsgen.benchmarks`"


def test_the_page_has_results() -> None:
    assert sections(), "no bench JSON under docs/benchmarks/results/: run `make bench-docs`"


@pytest.mark.parametrize("plot", benchmarks.PLOTS, ids=lambda plot: plot.file)
def test_each_plot_is_drawn_or_its_gap_named(plot: benchmarks.Plot) -> None:
    page = benchmarks.PAGE.read_text()
    series = sections().get(plot.section, {}).get("series", {})
    assert isinstance(series, dict)
    if series.get(plot.series):
        assert f"](img/{plot.file})" in page
        assert (benchmarks.IMAGES / plot.file).is_file()
    else:
        assert f"has no {plot.needs}" in page


def test_the_plots_are_drawn_from_the_json(tmp_path: Path) -> None:
    drawn = benchmarks.plot_all(tmp_path)
    assert {path.name for path in drawn} == {path.name for path in benchmarks.IMAGES.glob("*.png")}
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in drawn)


SENT = {
    "2 replicas on Redis: replica 1": [40, 51, 49, 12],
    "2 replicas on Redis: replica 2": [45, 48, 50, 9],
    "2 replicas on Redis: total": [85, 99, 99, 21],
    "baseline: 2 replicas, no Redis: replica 1": [90, 100, 97],
    "baseline: 2 replicas, no Redis: replica 2": [88, 99, 100],
    "baseline: 2 replicas, no Redis: total": [178, 199, 197],
    "1 replica on Redis: replica 1": [99, 100],
    "1 replica on Redis: total": [99, 100],
}


def _budget_plot() -> benchmarks.Plot:
    (plot,) = (p for p in benchmarks.PLOTS if (p.section, p.series) == ("fleet", "sent_per_second"))
    return plot


def test_the_budget_over_time_has_a_panel_per_scenario_a_line_per_replica_the_total_and_the_limit() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure = pyplot.figure()
    try:
        _budget_plot().draw(figure, SENT)
        panels = [axes for axes in figure.axes if axes.get_visible()]
        assert [axes.get_title() for axes in panels] == [
            "2 replicas on Redis",
            "baseline: 2 replicas, no Redis",
            "1 replica on Redis",
        ]
        lines = {line.get_label(): numpy.asarray(line.get_ydata()).tolist() for line in panels[1].get_lines()}
        assert lines == {
            "replica 1": [90, 100, 97],
            "replica 2": [88, 99, 100],
            "total": [178, 199, 197],
            "limit, 100/s": [100, 100],
        }
        assert [line.get_label() for line in panels[2].get_lines()] == ["replica 1", "total", "limit, 100/s"]
        # Three scenarios in two columns: the fourth panel is not shown.
        assert len(figure.axes) == 4
    finally:
        pyplot.close(figure)


def test_a_fleet_json_with_the_series_is_drawn_with_nothing_said_missing(tmp_path: Path) -> None:
    results, images = tmp_path / "results", tmp_path / "img"
    results.mkdir()
    fleet = {
        "section": "fleet",
        "command": "make bench ONLY=fleet RUNS=1",
        "runs": 1,
        "cores": 2,
        "python": "3.11.2",
        "measured_on": "2026-12-06",
        "figures": [],
        "series": {"sent_per_second": SENT},
    }
    (results / "fleet.json").write_text(json.dumps(fleet))
    drawn = benchmarks.plot_all(images, results)
    assert [path.name for path in drawn] == [_budget_plot().file]
    assert drawn[0].read_bytes().startswith(b"\x89PNG")
    page = benchmarks.page(results)
    assert f"![Budget spent over time per replica](img/{_budget_plot().file})" in page
    assert "Not drawn: the `fleet` section's JSON has no calls per second" not in page
    assert "Missing from" not in page
