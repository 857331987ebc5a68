"""The README's settings tables, generated from the declarations so they cannot drift.

`python -m service.settings_table` (`make settings-table`) rewrites each block of README.md between
`<!-- generated: NAME -->` and `<!-- end: NAME -->`; a unit test fails when the README is stale.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from backends.options import Declared, is_secret, variable
from backends.plugin import BackendType
from backends.registry import BACKEND_TYPES
from service.settings import Settings

__all__ = ["README", "render_blocks", "rewrite"]

_BOUNDS = {Ge: "at least", Gt: "above", Le: "at most", Lt: "below"}
README = Path(__file__).resolve().parent.parent / "README.md"


def _default(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("default_text"), str):
        return str(extra["default_text"])
    if field.default is PydanticUndefined:
        return "(required)"
    if field.default is None or field.default == ():
        return "(none)"
    value = field.default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def _bounds(field: FieldInfo) -> str:
    parts = [
        f"{_BOUNDS[type(m)]} {_number(getattr(m, type(m).__name__.lower()))}"
        for m in field.metadata
        if type(m) in _BOUNDS
    ]
    return f" Range: {', '.join(parts)}." if parts else ""


def _number(value: object) -> str:
    return (
        str(int(value))
        if isinstance(value, float) and value.is_integer()
        else f"{value:,}"
        if isinstance(value, int)
        else str(value)
    )


def _meaning(field: FieldInfo, name: str) -> str:
    description = (field.description or "") + _bounds(field)
    if is_secret(field):
        description += f" `{name}_FILE` reads it from a file instead."
    return description.replace("|", "\\|")


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _variables_table(model: type[Declared]) -> list[str]:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for field in model.model_fields.values():
        name = variable(field)
        if name is not None:
            rows.append(_row(f"`{name}`", _default(field), _meaning(field, name)))
    return rows


def _environment() -> str:
    lines = ["The gateway:", "", *_variables_table(Settings)]
    for kind in BACKEND_TYPES.values():
        if kind.from_environment and kind.options.keys_by_variable():
            lines += ["", f"The `{kind.name}` backend, {kind.summary}:", "", *_variables_table(kind.options)]
    return "\n".join(lines)


def _keys(kind: BackendType[Any]) -> Iterable[str]:
    for key, field in kind.options.model_fields.items():
        if is_secret(field):
            yield _row(
                f"`{kind.name}`", f"`{key}_env`, `{key}_file`", _default(field), f"{field.description}."
            )
        else:
            yield _row(f"`{kind.name}`", f"`{key}`", _default(field), _meaning(field, key))


def _routing_keys() -> str:
    lines = [
        "| type | key | default | meaning |",
        "|---|---|---|---|",
        _row("every type", "`type`", "(required)", ", ".join(f"`{name}`" for name in BACKEND_TYPES) + "."),
        _row("every type", "`qps`", "`IMS_QPS`", "this backend account's own request budget per second."),
    ]
    for kind in BACKEND_TYPES.values():
        lines.extend(_keys(kind))
    return "\n".join(lines)


BLOCKS: dict[str, Callable[[], str]] = {"environment": _environment, "routing-keys": _routing_keys}


def render_blocks(text: str) -> str:
    """`text` with every generated block rendered afresh."""
    for name, render in BLOCKS.items():
        pattern = re.compile(rf"(<!-- generated: {name} -->\n).*?(<!-- end: {name} -->)", re.DOTALL)
        match = pattern.search(text)
        if match is None:
            raise ValueError(f"README.md has no block `{name}`")
        text = f"{text[: match.end(1)]}{render()}\n{text[match.start(2) :]}"
    return text


def rewrite(readme: Path = README) -> bool:
    """Whether the README changed."""
    text = readme.read_text(encoding="utf-8")
    rendered = render_blocks(text)
    if rendered != text:
        readme.write_text(rendered, encoding="utf-8")
    return rendered != text


if __name__ == "__main__":
    print("README.md updated" if rewrite() else "README.md is up to date", file=sys.stderr)
