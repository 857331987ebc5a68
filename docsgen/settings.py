"""The settings reference: every environment variable and every routing-file key, generated from the
declarations (the gateway's `Settings` and each backend type's options) so the pages cannot drift."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from backends.options import BackendOptions, Declared, is_secret, variable
from backends.plugin import BackendType
from backends.registry import BACKEND_TYPES
from docsgen.links import relink
from service.settings import Settings

__all__ = ["environment", "routing_keys"]

_BOUNDS = {Ge: "at least", Gt: "above", Le: "at most", Lt: "below"}


def _default(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("default_text"), str):
        return relink(str(extra["default_text"]))
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
    description = relink(field.description or "") + _bounds(field)
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


def environment() -> str:
    lines = ["The gateway:", "", *_variables_table(Settings)]
    for kind in BACKEND_TYPES.values():
        if kind.from_environment and kind.options.keys_by_variable():
            lines += [
                "",
                f"The `{kind.name}` backend, {relink(kind.summary)}:",
                "",
                *_variables_table(kind.options),
            ]
    return "\n".join(lines)


def _keys(kind: BackendType[Any]) -> Iterable[str]:
    fields = kind.options.model_fields
    secrets = {key for key, field in fields.items() if is_secret(field)}
    for key, field in fields.items():
        if key in BackendOptions.model_fields:
            continue  # every type's, in the rows above
        if key.endswith("_file") and key.removesuffix("_file") in secrets:
            continue  # the secret's own row names its `_file` key
        if key in secrets:
            meaning = relink(field.description or "").replace("|", "\\|").rstrip(".") + "."
            companion = fields.get(f"{key}_file")
            if companion is not None and companion.description:
                meaning += " A `_file` is watched and re-read when it changes."
            yield _row(f"`{kind.name}`", f"`{key}_env`, `{key}_file`", _default(field), meaning)
        else:
            yield _row(f"`{kind.name}`", f"`{key}`", _default(field), _meaning(field, key))


def _everyones(key: str, field: FieldInfo) -> str:
    """A key every type declares (`BackendOptions`): its default, or the variable a type reads it from."""
    variables = [
        f"`{name}` ({kind.name})"
        for kind in BACKEND_TYPES.values()
        if key in kind.options.TABLE_INHERITS and (name := variable(kind.options.model_fields[key]))
    ]
    default = f"{', '.join(variables)}, else {_default(field)}" if variables else _default(field)
    return _row("every type", f"`{key}`", default, _meaning(field, key))


def routing_keys() -> str:
    lines = [
        "| type | key | default | meaning |",
        "|---|---|---|---|",
        _row("every type", "`type`", "(required)", ", ".join(f"`{name}`" for name in BACKEND_TYPES) + "."),
        *(_everyones(key, field) for key, field in BackendOptions.model_fields.items()),
    ]
    for kind in BACKEND_TYPES.values():
        lines.extend(_keys(kind))
    return "\n".join(lines)
