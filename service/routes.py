"""The routing file (`MODERATION_ROUTES`): named backends, and which BizTypes go to which chain of them.

    [backends.cloud]                  # any name; several of one type may coexist
    type = "tencent"                  # tencent | private | local
    region = "ap-guangzhou"
    secret_id_env = "TENCENTCLOUD_SECRET_ID"      # secrets by variable name or file, never inline
    secret_key_env = "TENCENTCLOUD_SECRET_KEY"
    qps = 100

    [backends.onprem]
    type = "private"
    url = "https://ims.internal.example:8443/"
    auth = "bearer"                   # tc3 | bearer | none
    token_file = "/run/secrets/ims-token"
    ca_file = "/etc/ims/ca.pem"

    [[routes]]                        # first match wins: exact names, then glob patterns
    biz_types = ["kids_*", "avatars"]
    chain = ["onprem"]
    on_failure = "review"             # or "error" (the default)

    [default]                         # everything else
    chain = ["cloud", "onprem"]
    attempts = 3
    rate_share = 0.8                  # at most 80 % of each backend's qps for this route

It is validated whole at start; every problem is reported with where it is.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BACKEND_TYPES = ("tencent", "private", "local")
ON_FAILURE = ("error", "review")
_SECRET_KEYS = {
    f"{secret}_{source}" for secret in ("secret_id", "secret_key", "token") for source in ("env", "file")
}
_BACKEND_KEYS = {
    "tencent": {"type", "qps", "region", "endpoint", *_SECRET_KEYS},
    "private": {
        "type",
        "qps",
        "url",
        "auth",
        "region",
        "version",
        "action",
        "path",
        "ca_file",
        "client_cert_file",
        "client_key_file",
        *_SECRET_KEYS,
    },
    "local": {"type", "qps"},
}
_ROUTE_KEYS = {"biz_types", "chain", "attempts", "on_failure", "rate_share"}


class RoutesError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid routing file:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class BackendConfig:
    name: str
    type: str
    # Every other key of the table, secrets already resolved from their variables or files.
    options: dict[str, Any] = field(default_factory=dict, repr=False)
    qps: int | None = None


@dataclass(frozen=True)
class RouteConfig:
    chain: tuple[str, ...]
    biz_types: tuple[str, ...] = ()
    attempts: int | None = None
    on_failure: str = "error"
    # The share of each chain backend's qps this route may spend (None: all of it).
    rate_share: float | None = None


@dataclass(frozen=True)
class RoutesConfig:
    backends: dict[str, BackendConfig]
    routes: tuple[RouteConfig, ...]
    default: RouteConfig

    @property
    def qps_by_backend(self) -> dict[str, int]:
        return {name: b.qps for name, b in self.backends.items() if b.qps is not None}

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(
            value
            for backend in self.backends.values()
            for key, value in backend.options.items()
            if key in {"secret_id", "secret_key", "token"} and value
        )


def load_routes(path: Path, environ: dict[str, str] | None = None) -> RoutesConfig:
    env = dict(os.environ) if environ is None else environ
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RoutesError([f"{path}: {exc}"]) from None
    problems: list[str] = []
    backends = {
        name: _backend(name, table, env, problems)
        for name, table in _table(document.get("backends"), "[backends]", problems).items()
    }
    if not backends:
        problems.append("[backends] must name at least one backend")
    routes = tuple(
        _route(table, f"[[routes]] #{i + 1}", backends, problems, needs_biz_types=True)
        for i, table in enumerate(_list(document.get("routes", []), "[[routes]]", problems))
    )
    default = _route(document.get("default"), "[default]", backends, problems, needs_biz_types=False)
    unknown = set(document) - {"backends", "routes", "default"}
    if unknown:
        problems.append(f"unknown top-level keys {sorted(unknown)}")
    if problems:
        raise RoutesError(problems)
    return RoutesConfig(backends, routes, default)


def _table(value: Any, where: str, problems: list[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        problems.append(f"{where} must be a table")
        return {}
    return value


def _list(value: Any, where: str, problems: list[str]) -> list[Any]:
    if not isinstance(value, list):
        problems.append(f"{where} must be an array of tables")
        return []
    return value


def _secret(table: dict[str, Any], key: str, env: dict[str, str], where: str, problems: list[str]) -> str:
    if f"{key}_env" in table:
        value = env.get(str(table[f"{key}_env"]), "")
        if not value:
            problems.append(f"{where}: the variable {table[f'{key}_env']} named by {key}_env is not set")
        return value.strip()
    if f"{key}_file" in table:
        try:
            return Path(str(table[f"{key}_file"])).read_text(encoding="utf-8").strip()
        except OSError as exc:
            problems.append(f"{where}: cannot read {key}_file {table[f'{key}_file']!r} ({exc.strerror})")
    return ""


def _backend(name: str, table: Any, env: dict[str, str], problems: list[str]) -> BackendConfig:
    where = f"[backends.{name}]"
    table = _table(table, where, problems)
    kind = table.get("type")
    if kind not in BACKEND_TYPES:
        problems.append(f"{where}: type {kind!r} is not one of {', '.join(BACKEND_TYPES)}")
        return BackendConfig(name, "local")
    unknown = set(table) - _BACKEND_KEYS[kind]
    if unknown:
        problems.append(f"{where}: unknown keys {sorted(unknown)} for type {kind}")
    qps = table.get("qps")
    if qps is not None and not (isinstance(qps, int) and qps >= 1):
        problems.append(f"{where}: qps must be a whole number of at least 1")
    options = {
        k: v for k, v in table.items() if k != "type" and k != "qps" and not k.endswith(("_env", "_file"))
    }
    for path_key in ("ca_file", "client_cert_file", "client_key_file"):
        if path_key in table:
            options[path_key] = Path(str(table[path_key]))
            if not options[path_key].is_file():
                problems.append(f"{where}: {path_key} {str(table[path_key])!r} is not a file")
    for secret in ("secret_id", "secret_key", "token"):
        value = _secret(table, secret, env, where, problems)
        if value:
            options[secret] = value
    if kind == "tencent" and not ("secret_id" in options and "secret_key" in options):
        problems.append(f"{where}: a tencent backend needs secret_id_env/_file and secret_key_env/_file")
    if kind == "private" and not str(table.get("url", "")).startswith(("http://", "https://")):
        problems.append(f"{where}: url must be an http:// or https:// URL")
    return BackendConfig(name, kind, options, qps if isinstance(qps, int) else None)


def _route(
    table: Any, where: str, backends: dict[str, BackendConfig], problems: list[str], *, needs_biz_types: bool
) -> RouteConfig:
    table = _table(table, where, problems)
    unknown = set(table) - _ROUTE_KEYS
    if unknown:
        problems.append(f"{where}: unknown keys {sorted(unknown)}")
    chain = table.get("chain")
    if not (isinstance(chain, list) and chain and all(isinstance(n, str) for n in chain)):
        problems.append(f"{where}: chain must be a non-empty list of backend names")
        chain = []
    for name in chain:
        if name not in backends:
            problems.append(f"{where}: chain names {name!r}, which is not in [backends]")
    biz_types = table.get("biz_types", [])
    if needs_biz_types and not (isinstance(biz_types, list) and biz_types):
        problems.append(f"{where}: biz_types must be a non-empty list of names or glob patterns")
        biz_types = []
    attempts = table.get("attempts")
    if attempts is not None and not (isinstance(attempts, int) and 1 <= attempts <= 10):
        problems.append(f"{where}: attempts must be a whole number from 1 to 10")
        attempts = None
    on_failure = table.get("on_failure", "error")
    if on_failure not in ON_FAILURE:
        problems.append(f"{where}: on_failure {on_failure!r} must be error or review")
        on_failure = "error"
    rate_share = table.get("rate_share")
    if rate_share is not None and not (isinstance(rate_share, int | float) and 0 < rate_share <= 1):
        problems.append(f"{where}: rate_share must be a number in (0, 1]")
        rate_share = None
    return RouteConfig(
        tuple(chain),
        tuple(str(b) for b in biz_types),
        attempts,
        on_failure,
        float(rate_share) if rate_share is not None else None,
    )
