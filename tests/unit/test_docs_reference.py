"""The docs' reference pages are generated from the declarations: a stale page fails here."""

from __future__ import annotations

import ast

import pytest

from backends.registry import BACKEND_TYPES
from docsgen import errors, metrics
from docsgen.blocks import DOCS, render_blocks
from docsgen.links import relink
from docsgen.pages import PAGES
from service.errors import KIND_POLICIES
from service.settings import Settings

ROOT = DOCS.parent


@pytest.mark.parametrize("page", list(PAGES))
def test_the_page_matches_the_declarations(page: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    assert render_blocks(text, PAGES[page]) == text, f"docs/{page} is stale: run `make docs-reference`"


def test_a_changed_declaration_shows_as_drift() -> None:
    page = "reference/settings.md"
    stale = (DOCS / page).read_text(encoding="utf-8").replace("`IMS_QPS` | `100`", "`IMS_QPS` | `50`")
    assert render_blocks(stale, PAGES[page]) != stale


def test_a_page_without_its_block_is_an_error() -> None:
    with pytest.raises(ValueError, match="environment"):
        render_blocks("no blocks here", PAGES["reference/settings.md"])


def test_every_declared_variable_is_on_the_settings_page() -> None:
    text = (DOCS / "reference/settings.md").read_text(encoding="utf-8")
    variables = [
        *Settings.keys_by_variable(),
        *(v for t in BACKEND_TYPES.values() for v in t.options.keys_by_variable()),
    ]
    assert variables
    assert [name for name in variables if f"| `{name}` |" not in text] == []


def test_each_routing_key_has_one_row() -> None:
    text = (DOCS / "reference/routing-keys.md").read_text(encoding="utf-8")
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith(("| `", "| every type"))]
    keys = [(row[0], key) for row in rows for key in row[1].split(", ")]
    assert len(keys) == len(set(keys))
    assert [row[3] for row in rows if row[3].endswith(".. |")] == []


def test_every_kind_says_when_it_happens() -> None:
    assert set(errors.WHEN) == set(KIND_POLICIES)


def test_every_documented_gateway_reason_is_still_raised() -> None:
    # The gateway's own reasons are string literals in service/; one no longer there is a stale row.
    literals = {
        node.value
        for path in (ROOT / "service").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    documented = {reason for _, reasons, _ in errors.GATEWAY_REASONS for reason in reasons}
    assert documented - literals == set()


def test_every_metric_has_its_labels_and_no_label_row_is_left_over() -> None:
    names = [instrument.prometheus_name for instrument in metrics.declared()]
    assert len(names) == len(set(names))
    assert set(names) == set(metrics.LABELS)


def test_the_metrics_page_names_what_the_alerts_and_dashboard_query() -> None:
    text = (DOCS / "reference/metrics.md").read_text(encoding="utf-8")
    assert "`moderation_governor_rate_per_second`" in text
    assert "`moderation_backend_attempt_duration_seconds`" in text


def test_a_link_to_an_unknown_readme_anchor_is_an_error() -> None:
    with pytest.raises(ValueError, match="#nowhere"):
        relink("see [it](#nowhere)")


def test_repository_files_are_named_not_linked() -> None:
    assert relink("[backends/x.toml](backends/x.toml)") == "`backends/x.toml`"
    assert relink("[the policy](backends/x.toml)") == "the policy (`backends/x.toml`)"
    assert relink("[PyPI](https://pypi.org/)") == "[PyPI](https://pypi.org/)"


def test_the_cli_page_shows_every_option() -> None:
    text = (DOCS / "reference/cli.md").read_text(encoding="utf-8")
    for option in ("--server", "--json", "--timeout", "--biz-type", "--concurrency", "--progress"):
        assert option in text


def test_the_api_page_shows_every_rpc_and_message() -> None:
    text = (DOCS / "reference/api.md").read_text(encoding="utf-8")
    proto = (ROOT / "protos/moderation/v1/moderation_service.proto").read_text(encoding="utf-8")
    declared = [line.split()[1] for line in proto.splitlines() if line.startswith(("message ", "enum "))]
    assert declared
    assert [name for name in declared if f"`{name}`" not in text and f"`{name}` (enum)" not in text] == []
    for rpc in ("ModerateImage", "StreamModerateImages", "BatchModerateImages"):
        assert f"| `{rpc}` |" in text
