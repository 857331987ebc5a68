"""The backend types, by name: adding one is a module declaring a `BackendType` and a line here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backends.local.plugin import LOCAL
from backends.plugin import BackendType
from backends.private import PRIVATE
from backends.tencent.plugin import TENCENT

__all__ = ["BACKEND_TYPES", "DEFAULT_TYPE", "UnknownBackendType", "backend_type", "default_type"]

BACKEND_TYPES: Mapping[str, BackendType[Any]] = {t.name: t for t in (TENCENT, PRIVATE, LOCAL)}
# With no credentials for any other type, the embedded backend does the work, so a fresh machine serves.
DEFAULT_TYPE = LOCAL.name


class UnknownBackendType(ValueError):
    def __init__(self) -> None:
        super().__init__(f"is not a backend type; the types are {', '.join(sorted(BACKEND_TYPES))}")


def backend_type(name: str) -> BackendType[Any]:
    try:
        return BACKEND_TYPES[name]
    except KeyError:
        raise UnknownBackendType() from None


def default_type(environ: Mapping[str, str]) -> str:
    """The first type whose credentials are in the environment (directly or as files), else local."""
    for kind in BACKEND_TYPES.values():
        if any(environ.get(v, "").strip() or environ.get(f"{v}_FILE", "").strip() for v in kind.selected_by):
            return kind.name
    return DEFAULT_TYPE
