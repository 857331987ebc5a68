"""The benchmark page is generated from the benches' JSON: an edited page, or JSON that changed without
the page, fails here; every plot the JSON has data for is drawn, and one it lacks data for says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from docsgen import benchmarks


def sections() -> dict[str, dict[str, object]]:
    return {path.stem: json.loads(path.read_text()) for path in benchmarks.RESULTS.glob("*.json")}


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
