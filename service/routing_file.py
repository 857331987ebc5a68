"""The routing file (`MODERATION_ROUTES`): named backends, and which BizTypes go to which chain of them.

    [backends.cloud]                  # any name; several of one type may coexist
    type = "..."                      # a type of backends.registry, with the keys that type declares
    qps = 100                         # this backend's own budget (default: its type's variable, or 100)
    max_attempts = 3                  # attempts per call (default: its type's variable, or 3)
    budget_key = "main"               # fleet mode: backends (and deployments) naming one key share it

    [[routes]]                        # first match wins: exact names, then glob patterns
    biz_types = ["kids_*", "avatars"]
    chain = ["onprem"]
    on_failure = "review"             # or "error" (the default)

    [default]                         # everything else
    chain = ["cloud", "onprem"]
    attempts = 3
    rate_share = 0.8                  # at most 80 % of each backend's qps for this route
    cache_user_fields = true          # user/device fields do not change this route's verdicts
    fetch = "gateway"                 # URL images downloaded by the gateway (default: by backend type)
    fetch_headers = { Referer = "https://app.example/" }   # sent with those downloads
    max_tiles = 8                     # tiles (billed calls) per image of extreme aspect ratio

Each backend type declares its own keys (`backends.registry`), `qps`, `max_attempts` and `budget_key`
among them (`backends.options.BackendOptions`); `type` is everyone's. The file is validated whole at
start; every problem is reported with where it is, never with a value.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from backends.options import BackendOptions, describe_errors, unreadable
from backends.registry import UnknownBackendType, backend_type
from common.files import MIB, SECRET_FILE_LIMIT, UnreadableFile, read_text_file

__all__ = ["BackendConfig", "RouteConfig", "RoutesConfig", "RoutesError", "load_routes"]

# A routing file of a thousand backends is a few hundred KB.
ROUTES_FILE_LIMIT = MIB
# An HTTP header's name (RFC 9110 token) and a value without control characters.
_HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$"
_HEADER_VALUE = r"^[\x20-\x7e]{0,1024}$"
_RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}
)
# The key every backend table has, whatever its type: the type, which declares the others.
_TYPE_KEY = "type"
_SOURCES = ("env", "file")


class RoutesError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid routing file:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class BackendConfig:
    """One named backend: its type and its validated options (its budget and attempts among them)."""

    name: str
    type: str
    options: BackendOptions


class RouteConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    chain: tuple[str, ...] = Field(min_length=1, description="backend names, tried in order")
    biz_types: tuple[str, ...] = Field((), description="exact names or glob patterns")
    attempts: int | None = Field(None, ge=1, le=10, description="per backend, retries included")
    on_failure: Literal["error", "review"] = "error"
    # The share of each chain backend's qps this route may spend (None: all of it).
    rate_share: float | None = Field(None, gt=0, le=1)
    # Requests with `user` or `device` may be answered from the verdict cache: this route's policies
    # do not use those fields (a backend may, so by default such requests always go to the backend).
    cache_user_fields: bool = False
    # Who downloads URL images: the gateway (then fits them and sends the bytes) or the backend.
    # None: as the type of the chain's first backend declares (`BackendType.fetch`).
    fetch: Literal["gateway", "backend"] | None = None
    # Headers the gateway's downloads send, for origins with anti-hotlinking rules.
    fetch_headers: dict[
        Annotated[str, Field(pattern=_HEADER_NAME)], Annotated[str, Field(pattern=_HEADER_VALUE)]
    ] = Field(default_factory=dict)
    # Tiles (each a billed call) an image of extreme aspect ratio may take; requests may ask for fewer.
    max_tiles: int = Field(8, ge=1, le=64)

    @field_validator("fetch_headers")
    @classmethod
    def _settable(cls, headers: dict[str, str]) -> dict[str, str]:
        reserved = sorted(name for name in headers if name.lower() in _RESERVED_HEADERS)
        if reserved:
            raise ValueError(f"the gateway sets these headers itself: {', '.join(reserved)}")
        return headers


class _Route(RouteConfig):
    biz_types: tuple[str, ...] = Field(min_length=1)


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    backends: dict[str, dict[str, Any]] = Field(min_length=1)
    routes: tuple[_Route, ...] = ()
    default: RouteConfig
    # Callers' quotas: validated by `service.quotas.config`, which reads them again when the file changes.
    quotas: dict[str, Any] = {}


@dataclass(frozen=True)
class RoutesConfig:
    backends: dict[str, BackendConfig]
    routes: tuple[RouteConfig, ...]
    default: RouteConfig


def load_routes(path: Path, environ: Mapping[str, str]) -> RoutesConfig:
    try:
        return _validated(_parsed(path), environ)
    except RecursionError:
        raise RoutesError(["nested too deeply"]) from None


def _parsed(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(read_text_file(path, ROUTES_FILE_LIMIT))
    except UnreadableFile as problem:
        raise RoutesError([f"cannot read the file ({problem})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise RoutesError([f"not valid TOML: {exc}"]) from None


def _validated(raw: dict[str, Any], environ: Mapping[str, str]) -> RoutesConfig:
    problems: list[str] = []
    document: _Document | None = None
    try:
        document = _Document.model_validate(raw)
    except ValidationError as error:
        problems.extend(_where(detail) for detail in describe_errors(error))
    tables = raw.get("backends")
    backends = {}
    for name, table in tables.items() if isinstance(tables, dict) else ():
        backend = _backend(name, table, environ, problems) if isinstance(table, dict) else None
        if backend is not None:
            backends[name] = backend
    named = set(tables) if isinstance(tables, dict) else set()
    for where, chain in _chains(raw):
        problems.extend(
            f"{where}: chain names {name!r}, which is not in [backends]"
            for name in chain
            if name not in named
        )
    if problems or document is None:
        raise RoutesError(problems)
    return RoutesConfig(backends, tuple(document.routes), document.default)


def _chains(raw: dict[str, Any]) -> Iterator[tuple[str, list[str]]]:
    """Each route's chain as written, however wrong the rest of the file is."""
    routes = raw.get("routes")
    tables = [(f"[[routes]] #{i + 1}", t) for i, t in enumerate(routes if isinstance(routes, list) else [])]
    for where, table in [*tables, ("[default]", raw.get("default"))]:
        chain = table.get("chain") if isinstance(table, dict) else None
        if isinstance(chain, list):
            yield where, [name for name in chain if isinstance(name, str)]


def _where(problem: str) -> str:
    """`routes.0.chain: ...` as the file's reader sees it: `[[routes]] #1 chain: ...`."""
    location, _, message = problem.partition(": ")
    head, _, rest = location.partition(".")
    if head == "routes" and rest:
        index, _, key = rest.partition(".")
        location = f"[[routes]] #{int(index) + 1}" + (f" {key}" if key else "")
    elif head in {"default", "backends"}:
        location = f"[{head}]" + (f" {rest}" if rest else "")
    return f"{location}: {message}"


def _backend(
    name: str, table: dict[str, Any], environ: Mapping[str, str], problems: list[str]
) -> BackendConfig | None:
    where = f"[backends.{name}]"
    try:
        kind = backend_type(str(table.get("type", "")))
    except UnknownBackendType as unknown:
        problems.append(f"{where} type: {unknown}")
        return None
    options_table = {k: v for k, v in table.items() if k != _TYPE_KEY}
    resolved = _resolve_secrets(options_table, kind.options, environ, where, problems)
    try:
        options = kind.options_from_table(resolved, environ)
    except ValidationError as error:
        problems.extend(describe_errors(error, where, keys=kind.options.keys_by_variable()))
        return None
    return BackendConfig(name, kind.name, options)


def _resolve_secrets(
    table: dict[str, Any],
    options: type[BackendOptions],
    environ: Mapping[str, str],
    where: str,
    problems: list[str],
) -> dict[str, Any]:
    """Secrets are named by a variable (`<key>_env`) or a file (`<key>_file`), never written inline."""
    resolved = dict(table)
    for key in options.secret_fields():
        if key in resolved:
            problems.append(f"{where} {key}: secrets are never inline; give {key}_env or {key}_file")
            del resolved[key]
        references = {
            source: resolved.pop(f"{key}_{source}") for source in _SOURCES if f"{key}_{source}" in resolved
        }
        if len(references) > 1:
            problems.append(f"{where}: give {key}_env or {key}_file, not both")
        elif "env" in references:
            variable = str(references["env"])
            resolved[key] = environ.get(variable, "") or unreadable(f"the variable {variable} is not set")
        elif "file" in references:
            try:
                resolved[key] = read_text_file(Path(str(references["file"])), SECRET_FILE_LIMIT)
            except UnreadableFile as problem:
                resolved[key] = unreadable(f"cannot read {key}_file ({problem})")
            if f"{key}_file" in options.model_fields:
                # The type watches the file for rotation: it gets the path beside the value.
                resolved[f"{key}_file"] = references["file"]
    return resolved
