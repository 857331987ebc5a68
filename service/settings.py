"""The gateway's settings: each environment variable declared once, validated at start.

Every problem is reported at once (`ConfigError`; the process exits with status 2) and no message
echoes a value, which could be a secret. What the backends need is declared by their types
(`backends.registry`); this module knows none of their option names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    FilePath,
    InstanceOf,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import NoDecode

from backends.fetch import IPNetwork, parse_networks
from backends.options import Declared, Secret, describe_errors, secret_values, variable
from backends.registry import BACKEND_TYPES, DEFAULT_TYPE, UnknownBackendType, backend_type, default_type
from service.auth import TokenFileError, load_tokens
from service.deadlines import BACKEND_TIMEOUT
from service.policy.legacy import local_sources
from service.policy.loading import PolicyError, PolicySource
from service.policy.rules import Policy
from service.quotas.config import load_quotas
from service.routing_file import BackendConfig, RoutesConfig, RoutesError, load_routes
from service.tasks.callers import CallersFileError, load_callers
from service.tasks.delivery import DEFAULT_SCHEDULE
from service.tasks.signing import SecretError, parse_secrets
from service.telemetry import DEFAULT_MAX_CALLERS

__all__ = ["ConfigError", "Settings", "load_settings"]


class ConfigError(Exception):
    """Everything wrong with the configuration, one problem a line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


def _host_port(example: str) -> AfterValidator:
    def check(value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r".+:\d{1,5}", value):
            raise ValueError(f"must be HOST:PORT, e.g. {example}")
        return value

    return AfterValidator(check)


def _metrics_listen(value: object) -> object:
    return None if isinstance(value, str) and value.strip().lower() == "off" else value


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("must be an IANA time zone name, e.g. Asia/Shanghai") from None
    return value


def _backend_name(value: str) -> str:
    backend_type(value)  # UnknownBackendType is a ValueError, reported with the other problems
    return value


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


def _on_off(value: object) -> object:
    """`on`/`off` (any case); pydantic's own spellings of a bool are accepted too."""
    if isinstance(value, str) and value.strip().lower() in {"on", "off"}:
        return value.strip().lower() == "on"
    return value


def _redis_url(value: SecretStr) -> SecretStr:
    parts = urlsplit(value.get_secret_value())
    if parts.scheme not in {"redis", "rediss"} or not parts.hostname:
        raise ValueError("must be a redis:// or rediss:// URL with a host")
    return value


RedisUrl = Annotated[Secret, AfterValidator(_redis_url)]


def _webhook_secrets(value: SecretStr | None) -> SecretStr | None:
    if value is not None:
        try:
            parse_secrets(value.get_secret_value())
        except SecretError as problem:
            raise ValueError(str(problem)) from None
    return value


def _callers_file(value: Path | None) -> Path | None:
    if value is not None:
        try:
            load_callers(value)
        except CallersFileError as problem:
            raise ValueError(str(problem).replace("\n", "; ")) from None
    return value


def _seconds_list(value: object) -> object:
    return tuple(value.split()) if isinstance(value, str) else value


def _schedule(value: tuple[float, ...]) -> tuple[float, ...]:
    if not value or len(value) > 100 or any(not 0 <= delay <= 7 * 86_400 for delay in value):
        raise ValueError("must be 1 to 100 numbers of seconds, each from 0 to 604800")
    return value


def _cache_ttl(suggestion: str, default: float, spelled: str) -> Any:
    return Field(
        default,
        ge=0,
        le=30 * 86_400,
        validation_alias=f"MODERATION_CACHE_TTL_{suggestion}",
        description=f"seconds a {suggestion} verdict is kept ({spelled}); 0: never cached.",
    )


_TYPE_NAMES = ", ".join(f"`{name}`" for name in sorted(BACKEND_TYPES))
_SELECTED_BY = "; ".join(
    f"`{t.name}` when {' or '.join(f'`{v}`' for v in t.selected_by)} is set"
    for t in BACKEND_TYPES.values()
    if t.selected_by
)


_FETCH_BY_TYPE = ", ".join(f"`{t.fetch}` for {t.name}" for t in BACKEND_TYPES.values())


class Settings(Declared):
    listen: Annotated[str, _host_port("[::]:50051")] = Field(
        "[::]:50051",
        validation_alias="MODERATION_LISTEN",
        description="`HOST:PORT` to serve gRPC on. A port already in use is a start-up error (exit "
        "status 3), never a silently shared port.",
    )
    backend: Annotated[str, BeforeValidator(_lower), AfterValidator(_backend_name)] = Field(
        DEFAULT_TYPE,
        validation_alias="MODERATION_BACKEND",
        description=f"which backend answers when there is no routing file: {_TYPE_NAMES}.",
        json_schema_extra={"default_text": f"{_SELECTED_BY}; else `{DEFAULT_TYPE}`"},
    )
    interactive_share: float = Field(
        0.5,
        ge=0,
        le=1,
        validation_alias="MODERATION_INTERACTIVE_SHARE",
        description="the share of each backend's rate budget (`qps`) unary calls may take ahead of waiting "
        "stream items.",
    )
    stream_max_in_flight: int = Field(
        128,
        ge=1,
        le=10_000,
        validation_alias="MODERATION_STREAM_MAX_IN_FLIGHT",
        description="items one stream may have in flight (read but not yet answered).",
    )
    stream_max_in_flight_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1,
        le=2**40,
        validation_alias="MODERATION_STREAM_MAX_IN_FLIGHT_BYTES",
        description="image bytes one stream may have in flight (64 MiB).",
    )
    max_in_flight: int = Field(
        512,
        ge=1,
        le=100_000,
        validation_alias="MODERATION_MAX_IN_FLIGHT",
        description="stream and batch items in flight across the whole server.",
    )
    backend_timeout: float = Field(
        BACKEND_TIMEOUT,
        ge=0.1,
        le=BACKEND_TIMEOUT,
        validation_alias="MODERATION_BACKEND_TIMEOUT",
        description="seconds a call may wait on the backend, at most the cloud API's 15 s service timeout "
        "(only lowering is allowed).",
    )
    shutdown_grace: float = Field(
        20.0,
        # In-flight calls may take the whole backend timeout, so the grace period is at least that.
        ge=BACKEND_TIMEOUT,
        le=3600,
        validation_alias="MODERATION_SHUTDOWN_GRACE",
        description="seconds in-flight calls get to finish after SIGTERM; at least the 15 s backend timeout.",
    )
    drain_delay: float = Field(
        0.0,
        ge=0,
        le=300,
        validation_alias="MODERATION_DRAIN_DELAY",
        description="seconds between reporting NOT_SERVING and refusing new calls, so load balancers can "
        "notice first.",
    )
    event_loop: Annotated[Literal["uvloop", "asyncio"], BeforeValidator(_lower)] = Field(
        "uvloop",
        validation_alias="MODERATION_EVENT_LOOP",
        description="`uvloop` (libuv's event loop; about 7 % more cache hits per second, measured) or "
        "`asyncio` (the standard library's).",
    )
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_upper)] = Field(
        "INFO", validation_alias="MODERATION_LOG_LEVEL", description="`DEBUG`, `INFO`, `WARNING` or `ERROR`."
    )
    log_format: Annotated[Literal["json", "text"], BeforeValidator(_lower)] = Field(
        "json",
        validation_alias="MODERATION_LOG_FORMAT",
        description="`json` (one object per line) or `text`.",
    )
    metrics_listen: Annotated[str | None, BeforeValidator(_metrics_listen), _host_port("[::]:9464")] = Field(
        "[::]:9464",
        validation_alias="MODERATION_METRICS_LISTEN",
        description="`HOST:PORT` serving `/metrics` for Prometheus, or `off`.",
    )
    metrics_max_callers: int = Field(
        DEFAULT_MAX_CALLERS,
        ge=1,
        le=10_000,
        validation_alias="MODERATION_METRICS_MAX_CALLERS",
        description="distinct `caller` label values the metrics keep; callers past this number are "
        "counted as `other`.",
    )
    stream_idle_timeout: float = Field(
        60.0,
        ge=0.1,
        le=86_400,
        validation_alias="MODERATION_STREAM_IDLE_TIMEOUT",
        description="seconds a stream may send nothing while none of its items is in flight before it is "
        "closed.",
    )
    max_concurrent_rpcs: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        validation_alias="MODERATION_MAX_CONCURRENT_RPCS",
        description="calls the server runs at once; more get `RESOURCE_EXHAUSTED` instead of queueing in "
        "memory.",
    )
    caller_max_in_flight: int = Field(
        # Above the 80 calls the default 100/s budget keeps busy at a cloud call's ~0.8 s, and well under the
        # server's cap: a 2-core gateway running 200 calls of one flood at once kept a canary waiting.
        128,
        ge=1,
        le=1_000_000,
        validation_alias="MODERATION_CALLER_MAX_IN_FLIGHT",
        description="calls one caller may run at once, and stream items it may have in flight (its "
        "bulkhead); more calls get `RESOURCE_EXHAUSTED` (`CALLER_OVER_CAPACITY`), more items wait to be "
        "read. The caller is the authenticated one, or with authentication off the peer's IP address.",
    )
    max_streams_per_connection: int = Field(
        100,
        ge=1,
        le=100_000,
        validation_alias="MODERATION_MAX_STREAMS_PER_CONNECTION",
        description="calls one connection may have open at once (HTTP/2); more wait in the client.",
    )
    tls_cert: FilePath | None = Field(
        None,
        validation_alias="MODERATION_TLS_CERT_FILE",
        description="serve gRPC over TLS with this certificate chain (PEM), with `MODERATION_TLS_KEY_FILE`.",
        json_schema_extra={"default_text": "(plain text)"},
    )
    tls_key: FilePath | None = Field(
        None,
        validation_alias="MODERATION_TLS_KEY_FILE",
        description="the TLS certificate's private key (PEM).",
    )
    tls_client_ca: FilePath | None = Field(
        None,
        validation_alias="MODERATION_TLS_CLIENT_CA_FILE",
        description="require client certificates signed by this CA (mutual TLS); the certificate's common "
        "name names the caller.",
    )
    auth_tokens_file: FilePath | None = Field(
        None,
        validation_alias="MODERATION_AUTH_TOKENS_FILE",
        description="require `authorization: Bearer <token>`; one `caller-name token` a line (tokens of 16+ "
        "characters).",
    )
    caller_share: Annotated[float | None, AfterValidator(lambda share: share or None)] = Field(
        None,
        ge=0,
        le=1,
        validation_alias="MODERATION_CALLER_SHARE",
        description="the share (0 to 1) of each backend's rate budget one authenticated caller may spend.",
    )
    # A Path, not a FilePath: `load_routes` reads it and reports what is wrong with it, once.
    routes_file: Path | None = Field(
        None,
        validation_alias="MODERATION_ROUTES",
        description="a routing file: several named backends and the BizType routes between them (see "
        "[Routing](#routing-failover-and-private-deployments)).",
    )
    circuit_failures: int = Field(
        5,
        ge=1,
        le=1000,
        validation_alias="MODERATION_CIRCUIT_FAILURES",
        description="consecutive failures that open a backend's circuit.",
    )
    circuit_reset: float = Field(
        10.0,
        ge=0.01,
        le=3600,
        validation_alias="MODERATION_CIRCUIT_RESET",
        description="seconds an open circuit waits before probing its backend again.",
    )
    redis_url: RedisUrl | None = Field(
        None,
        validation_alias="MODERATION_REDIS_URL",
        description="fleet mode: every replica's governor takes its slots from one schedule in this Redis "
        "(`redis://` or `rediss://` for TLS, `[user:password@]host:port[/db]`), so replicas pointing at "
        "one Redis and budget key share the budget. Unset, each process spends its budget alone.",
        json_schema_extra={"default_text": "(one process, one budget)"},
    )
    fleet_expected_replicas: int | None = Field(
        None,
        ge=1,
        le=10_000,
        validation_alias="MODERATION_FLEET_EXPECTED_REPLICAS",
        description="fleet mode: the replicas a gateway that has never reached Redis assumes share the "
        "budget, spending its part of it until Redis answers. Unset, such a gateway grants nothing until "
        "Redis first answers or 30 s have passed, then spends the budget alone.",
        json_schema_extra={"default_text": "(wait for Redis, at most 30 s)"},
    )
    redis_ca_file: FilePath | None = Field(
        None,
        validation_alias="MODERATION_REDIS_CA_FILE",
        description="the CA (PEM) that signed a `rediss://` server's certificate; default the system's.",
    )
    redis_password: Secret | None = Field(
        None,
        validation_alias="MODERATION_REDIS_PASSWORD",
        description="Redis's password, when not in the URL; never logged, never written to Redis.",
    )

    cache: Annotated[Literal["memory", "redis", "off"], BeforeValidator(_lower)] = Field(
        "memory",
        validation_alias="MODERATION_CACHE",
        description="the verdict cache (see [Verdict cache](#verdict-cache-never-pay-twice-for-one-image)): "
        "`memory` (a bounded in-process LRU), `redis` (shared by the fleet through `MODERATION_REDIS_URL`, "
        "the LRU in front) or `off`.",
    )
    cache_max_entries: int = Field(
        10_000,
        ge=1,
        le=10_000_000,
        validation_alias="MODERATION_CACHE_MAX_ENTRIES",
        description="verdicts the in-process LRU holds (a verdict is 1-3 KB).",
    )
    cache_ttl_pass: float = _cache_ttl("PASS", 86_400, "one day")
    cache_ttl_review: float = _cache_ttl("REVIEW", 3_600, "one hour")
    cache_ttl_block: float = _cache_ttl("BLOCK", 7 * 86_400, "a week")
    cache_version: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")] = Field(
        "1",
        validation_alias="MODERATION_CACHE_VERSION",
        description="the policy version in every cache key: bump it after changing a policy in a backend's "
        "console, and no verdict cached before is used again.",
    )
    cache_urls: Annotated[bool, BeforeValidator(_on_off)] = Field(
        False,
        validation_alias="MODERATION_CACHE_URLS",
        description="`on`: `url` images are cached too, keyed by the URL (the content behind a URL can "
        "change); `off`: they always go to the backend.",
        json_schema_extra={"default_text": "`off`"},
    )
    policy_file: FilePath | None = Field(
        None,
        validation_alias="MODERATION_POLICY_FILE",
        description="the gateway's policy per BizType over every backend's answer: thresholds, keyword "
        "lists, detectors and image lists (TOML). Re-read when it or a file it names changes; a bad "
        "file at start-up is an error, at reload it is logged and the previous policy kept.",
        json_schema_extra={"default_text": "(the backends' answers as they are)"},
    )
    quota_timezone: Annotated[str, AfterValidator(_time_zone)] = Field(
        "Asia/Shanghai",
        validation_alias="MODERATION_QUOTA_TIMEZONE",
        description="the time zone of the quotas' calendar days and months (an IANA name; the default is "
        "the Beijing time the cloud provider bills by). See the quotas guide.",
    )
    quota_redis_failure: Annotated[Literal["fail-open", "fail-closed"], BeforeValidator(_lower)] = Field(
        "fail-open",
        validation_alias="MODERATION_QUOTA_REDIS_FAILURE",
        description="what a quota does while Redis is unreachable: `fail-open` serves and counts here, "
        "adding the counts once Redis is back; `fail-closed` refuses every call a quota governs.",
    )
    fetch: Annotated[Literal["gateway", "backend"] | None, BeforeValidator(_lower)] = Field(
        None,
        validation_alias="MODERATION_FETCH",
        description="who downloads `url` images: `gateway` (the gateway fetches, fits and sends the "
        "bytes) or `backend` (the URL is passed on); a route's own `fetch` wins. Unset: as the type of "
        f"the route's first backend declares ({_FETCH_BY_TYPE}).",
        json_schema_extra={"default_text": "by backend type"},
    )
    fetch_allow_networks: Annotated[tuple[IPNetwork, ...], NoDecode, BeforeValidator(parse_networks)] = Field(
        (),
        validation_alias="MODERATION_FETCH_ALLOW_NETWORKS",
        description="comma-separated networks (`10.1.0.0/16,::1/128`) the gateway's own downloads of "
        'image URLs (a route\'s `fetch = "gateway"`) may reach although they are not publicly routable; '
        "the local backend's downloads read the same variable.",
    )
    webhook_secrets: Annotated[Secret | None, AfterValidator(_webhook_secrets)] = Field(
        None,
        validation_alias="MODERATION_WEBHOOK_SECRETS",
        description="the secrets asynchronous tasks' callbacks are signed with (Standard Webhooks): one or "
        "more `whsec_` + base64 secrets separated by spaces, newest first; every callback is signed with "
        "each. From `MODERATION_WEBHOOK_SECRETS_FILE`, the file is re-read when it changes, so secrets "
        "rotate without a restart. Unset: submissions with a `callback_url` are refused.",
        json_schema_extra={"default_text": "(no callbacks)"},
    )
    callback_allowed_networks: Annotated[tuple[IPNetwork, ...], NoDecode, BeforeValidator(parse_networks)] = (
        Field(
            (),
            validation_alias="MODERATION_CALLBACK_ALLOWED_NETWORKS",
            description="comma-separated networks (`127.0.0.0/8,10.1.0.0/16`) callbacks may reach although "
            "they are not publicly routable.",
        )
    )
    callback_allow_http: Annotated[bool, BeforeValidator(_on_off)] = Field(
        False,
        validation_alias="MODERATION_CALLBACK_ALLOW_HTTP",
        description="`on`: callback URLs may be plain `http`; `off`: `https` only.",
        json_schema_extra={"default_text": "`off`"},
    )
    callback_callers_file: Annotated[FilePath | None, AfterValidator(_callers_file)] = Field(
        None,
        validation_alias="MODERATION_CALLBACK_CALLERS_FILE",
        description="per authenticated caller, its own webhook secrets (a `secrets_file`, re-read when it "
        "changes) and the networks its callbacks may reach besides `MODERATION_CALLBACK_ALLOWED_NETWORKS` "
        "(`allowed_networks`): a TOML table per caller, see the asynchronous tasks guide.",
        json_schema_extra={"default_text": "(the gateway's for every caller)"},
    )
    callback_retry_schedule: Annotated[
        tuple[float, ...], NoDecode, BeforeValidator(_seconds_list), AfterValidator(_schedule)
    ] = Field(
        DEFAULT_SCHEDULE,
        validation_alias="MODERATION_CALLBACK_RETRY_SCHEDULE",
        description="a testing knob: the seconds before each callback attempt, counted from the one "
        "before, separated by spaces (each spread by 10 % jitter). The default is Standard Webhooks': "
        "at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.",
        json_schema_extra={"default_text": "`0 5 300 1800 7200 18000 36000 50400 72000 86400`"},
    )
    callback_workers: int = Field(
        32,
        ge=1,
        le=10_000,
        validation_alias="MODERATION_CALLBACK_WORKERS",
        description="callback requests a gateway sends at once.",
    )
    task_workers: int = Field(
        # Twice what one replica needs to spend a 100/s budget at IMS's ~0.8 s: each task also waits on
        # Redis and for its slot (100 per replica spent 58/s of a two-replica fleet's budget, measured).
        200,
        ge=1,
        le=10_000,
        validation_alias="MODERATION_TASK_WORKERS",
        description="asynchronous tasks a gateway moderates at once (they wait for idle budget).",
    )
    task_retention: float = Field(
        86_400.0,
        ge=1,
        le=30 * 86_400,
        validation_alias="MODERATION_TASK_RETENTION",
        description="seconds a task's result is kept for `GetModerationTask` after it is reached (longer "
        "while callback retries are pending); then the task answers `NOT_FOUND`.",
    )
    task_deadline: float = Field(
        3_600.0,
        ge=1,
        le=7 * 86_400,
        validation_alias="MODERATION_TASK_DEADLINE",
        description="seconds a task may wait for budget before it fails with `DEADLINE_EXCEEDED`.",
    )
    task_lease: float = Field(
        60.0,
        ge=0.5,
        le=3_600,
        validation_alias="MODERATION_TASK_LEASE",
        description="fleet mode: seconds after which a task or callback taken by a replica that went "
        "silent is taken over by another (a replica at work renews its tasks' leases three times a "
        "lease). Keep it above the 15 s callback time-out; lower it only in tests.",
    )
    task_resend_in_doubt: Annotated[bool, BeforeValidator(_on_off)] = Field(
        False,
        validation_alias="MODERATION_TASK_RESEND_IN_DOUBT",
        description="fleet mode: what becomes of a task taken over from a replica that stopped while the "
        "task's backend call was in flight (IMS may have billed that call, and cannot be asked for its "
        "answer again). `off`: it is not sent again and fails with `ABORTED` (`TASK_OUTCOME_IN_DOUBT`), "
        "unless the verdict cache has the image's answer; `on`: it is sent again, and paid twice.",
        json_schema_extra={"default_text": "`off`"},
    )

    # Built by `load_settings` from the variables above, never read from a variable of their own.
    backends: tuple[BackendConfig, ...] = ()
    routes: RoutesConfig | None = None
    policy: InstanceOf[Policy] | None = Field(None, repr=False)
    # Where `policy` was read from, and is re-read from when its files change.
    policy_source: InstanceOf[PolicySource] | None = Field(None, repr=False)
    auth_tokens: dict[str, str] = Field(default_factory=dict, repr=False)
    secrets: tuple[str, ...] = Field((), repr=False)
    # MODERATION_WEBHOOK_SECRETS_FILE, re-read when it changes.
    webhook_secrets_file: Path | None = None

    @model_validator(mode="after")
    def _tls_consistent(self) -> Self:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("MODERATION_TLS_CERT_FILE and MODERATION_TLS_KEY_FILE go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError(
                "MODERATION_TLS_CLIENT_CA_FILE (mutual TLS) needs MODERATION_TLS_CERT_FILE and _KEY_FILE"
            )
        return self

    @model_validator(mode="after")
    def _redis_consistent(self) -> Self:
        tls = self.redis_url is not None and self.redis_url.get_secret_value().startswith("rediss://")
        if self.redis_ca_file is not None and not tls:
            raise ValueError("MODERATION_REDIS_CA_FILE needs a rediss:// MODERATION_REDIS_URL")
        return self

    @model_validator(mode="after")
    def _cache_store_configured(self) -> Self:
        if self.cache == "redis" and self.redis_url is None:
            raise ValueError("MODERATION_CACHE=redis needs MODERATION_REDIS_URL")
        return self

    @property
    def redis_secrets(self) -> tuple[str, ...]:
        """The URL, the password in it and the separate one: for the log filter that redacts them."""
        url_password = urlsplit(self.redis_url.get_secret_value()).password if self.redis_url else None
        return (*secret_values(self), *((url_password,) if url_password else ()))

    @property
    def log_json(self) -> bool:
        return self.log_format == "json"


def _name(field: str) -> str:
    name = variable(Settings.model_fields[field])
    assert name is not None, f"Settings.{field} is read from a variable"
    return name


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    backend_variable = _name("backend")
    if not env.get(backend_variable, "").strip():
        env = {**env, backend_variable: default_type(env)}
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = Settings.from_environment(env)
    except ValidationError as error:
        problems.extend(describe_errors(error))
    routes_path = env.get(_name("routes_file"), "").strip()
    routes = _routes(Path(routes_path), env, problems) if routes_path else None
    if routes is not None:
        problems.extend(_quota_problems(Path(routes_path)))
    if routes_path:
        backends = list(routes.backends.values()) if routes else []
    else:
        backends = _single_backend(env, problems)
    auth_tokens = _auth_tokens(settings, problems)
    source = _policy_source(settings, backends, routed=bool(routes_path), problems=problems)
    policy = _policy(source, settings, problems)
    if settings is None or problems:
        raise ConfigError(problems)
    secrets = (
        *(s for backend in backends for s in secret_values(backend.options)),
        *auth_tokens,
        *settings.redis_secrets,
        *(settings.webhook_secrets.get_secret_value().split() if settings.webhook_secrets else ()),
    )
    return settings.model_copy(
        update={
            "backends": tuple(backends),
            "routes": routes,
            "policy": policy,
            "policy_source": source,
            "auth_tokens": auth_tokens,
            "secrets": secrets,
            "webhook_secrets_file": _webhook_secrets_file(env),
        }
    )


def _routes(path: Path, env: Mapping[str, str], problems: list[str]) -> RoutesConfig | None:
    try:
        return load_routes(path, env)
    except RoutesError as exc:
        problems.extend(f"{_name('routes_file')}: {problem}" for problem in exc.problems)
        return None


def _quota_problems(path: Path) -> list[str]:
    try:
        load_quotas(path)
    except RoutesError as exc:
        return [f"{_name('routes_file')}: {problem}" for problem in exc.problems]
    return []


def _single_backend(env: Mapping[str, str], problems: list[str]) -> list[BackendConfig]:
    backend_variable = _name("backend")
    name = env[backend_variable].strip().lower()
    try:
        kind = backend_type(name)
    except UnknownBackendType:
        return []  # reported with the gateway's settings
    if not kind.from_environment:
        problems.append(
            f"{backend_variable}: a {name} backend is configured in a routing file ({_name('routes_file')})"
        )
        return []
    try:
        return [BackendConfig(name, name, kind.options.from_environment(env))]
    except ValidationError as error:
        problems.extend(describe_errors(error))
        return []


def _policy_source(
    settings: Settings | None, backends: list[BackendConfig], *, routed: bool, problems: list[str]
) -> PolicySource | None:
    """`MODERATION_POLICY_FILE`, with what the local backends' deprecated settings fold into it (their
    policy file stands in for it when it is unset)."""
    given = settings.policy_file if settings is not None else None
    local, conflicts = local_sources(backends, routed=routed)
    problems.extend(conflicts)
    if local is None:
        return PolicySource(given) if given is not None else None
    return PolicySource(given or local.policy_file, local)


def _policy(source: PolicySource | None, settings: Settings | None, problems: list[str]) -> Policy | None:
    if source is None:
        return None
    try:
        return source.load()
    except PolicyError as exc:
        given = settings is not None and settings.policy_file is not None
        named = ", ".join(((_name("policy_file"),) if given else ()) + source.deprecated)
        problems.extend(f"{named}: {problem}" for problem in exc.problems)
        return None


def _auth_tokens(settings: Settings | None, problems: list[str]) -> dict[str, str]:
    if settings is None or settings.auth_tokens_file is None:
        return {}
    try:
        return load_tokens(settings.auth_tokens_file)
    except TokenFileError as exc:
        problems.append(f"{_name('auth_tokens_file')}: {exc}")
        return {}


def _webhook_secrets_file(env: Mapping[str, str]) -> Path | None:
    path = env.get(f"{_name('webhook_secrets')}_FILE", "").strip()
    return Path(path) if path else None
