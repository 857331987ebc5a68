"""The README's settings tables are generated from the declarations: a stale README fails here."""

from __future__ import annotations

import pytest

from backends.registry import BACKEND_TYPES
from service.settings import Settings
from service.settings_table import README, render_blocks


def test_the_readme_tables_match_the_declarations() -> None:
    text = README.read_text(encoding="utf-8")
    assert render_blocks(text) == text, "README.md is stale: run `make settings-table`"


def test_a_changed_declaration_shows_as_drift() -> None:
    stale = README.read_text(encoding="utf-8").replace("`IMS_QPS` | `100`", "`IMS_QPS` | `50`")
    assert render_blocks(stale) != stale


def test_every_declared_variable_is_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    variables = [
        *Settings.keys_by_variable(),
        *(v for t in BACKEND_TYPES.values() for v in t.options.keys_by_variable()),
    ]
    assert variables
    missing = [name for name in variables if f"| `{name}` |" not in text]
    assert not missing


def test_a_readme_without_a_block_is_an_error() -> None:
    with pytest.raises(ValueError, match="environment"):
        render_blocks("no blocks here")
