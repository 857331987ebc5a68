"""Settings from environment variables, validated once at start with messages that say what to fix.

Secrets are read here and nowhere else: from `NAME` or from the file named by `NAME_FILE` (for
Kubernetes secrets mounted as files). Their values never appear in a message.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from backends.local.fetch import FetchPolicy
from backends.local.settings import LocalSettings
from backends.tencent.auth import Credentials
from service.auth import TokenFileError, load_tokens
from service.deadlines import BACKEND_TIMEOUT
from service.routes import RoutesConfig, RoutesError, load_routes

BACKENDS = ("tencent", "local")
CREDENTIAL_VARIABLES = "TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY"
_REGION = re.compile(r"[a-z]{2,}(-[a-z0-9]+)+")


class ConfigError(Exception):
    """Everything wrong with the configuration, one problem a line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class TencentSettings:
    credentials: Credentials
    region: str
    endpoint: str


@dataclass(frozen=True)
class Settings:
    listen: str = "[::]:50051"
    backend: str = "local"
    tencent: TencentSettings | None = None
    local: LocalSettings | None = None
    # From MODERATION_ROUTES: several named backends and the BizType routes between them.
    routes: RoutesConfig | None = None
    max_attempts: int = 3
    qps: int = 100
    interactive_share: float = 0.5
    stream_max_in_flight: int = 128
    stream_max_in_flight_bytes: int = 64 * 1024 * 1024
    max_in_flight: int = 512
    stream_idle_timeout: float = 60.0
    max_concurrent_rpcs: int = 1000
    max_streams_per_connection: int = 100
    backend_timeout: float = BACKEND_TIMEOUT
    circuit_failures: int = 5
    circuit_reset: float = 10.0
    shutdown_grace: float = 20.0
    drain_delay: float = 0.0
    log_level: str = "INFO"
    log_json: bool = True
    # HOST:PORT serving /metrics for Prometheus; None turns it off.
    metrics_listen: str | None = None
    # TLS for the gRPC listener, and who may call: client certificates signed by `tls_client_ca`
    # (mutual TLS) and/or bearer tokens (token -> caller name).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    auth_tokens: dict[str, str] = field(default_factory=dict, repr=False)
    # The share of each backend's budget one caller may spend (None: no per-caller limit).
    caller_share: float | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)


class _Reader:
    """Reads variables, collecting problems instead of stopping at the first."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []

    def text(self, name: str, default: str = "") -> str:
        return self.environ.get(name, "").strip() or default

    def secret(self, name: str) -> str:
        path = self.environ.get(f"{name}_FILE", "").strip()
        if path:
            try:
                value = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                self.problems.append(f"{name}_FILE: cannot read {path!r} ({exc.strerror})")
                return ""
        else:
            value = self.environ.get(name, "")
            if value != value.strip():
                # Tencent refuses padded keys with a signature failure that hides the cause.
                self.problems.append(f"{name} has leading or trailing whitespace")
                value = value.strip()
        return value

    def number(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        raw = self.text(name)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            self.problems.append(f"{name}={raw!r} is not a number")
            return default
        if not minimum <= value <= maximum:
            self.problems.append(f"{name}={raw} must be between {minimum:g} and {maximum:g}")
            return default
        return value

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        raw = self.text(name)
        if raw and not raw.isdigit():
            self.problems.append(f"{name}={raw!r} is not a whole number")
            return default
        return int(self.number(name, default, minimum=minimum, maximum=maximum))


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = _Reader(os.environ if environ is None else environ)
    listen = env.text("MODERATION_LISTEN", "[::]:50051")
    if not re.fullmatch(r".+:\d{1,5}", listen):
        env.problems.append(f"MODERATION_LISTEN={listen!r} must be HOST:PORT, e.g. [::]:50051")
    backend = env.text("MODERATION_BACKEND").lower()
    secret_id, secret_key = env.secret("TENCENTCLOUD_SECRET_ID"), env.secret("TENCENTCLOUD_SECRET_KEY")
    token = env.secret("TENCENTCLOUD_TOKEN")
    # With no cloud credentials the embedded backend does the work, so a fresh machine serves at once.
    backend = backend or ("tencent" if secret_id or secret_key else "local")
    if backend not in BACKENDS:
        env.problems.append(f"MODERATION_BACKEND={backend!r} is not one of: {', '.join(BACKENDS)}")
    routes = _routes(env)
    uses_local = backend == "local" or (
        routes is not None and any(b.type == "local" for b in routes.backends.values())
    )
    tencent = (
        _tencent_settings(env, secret_id, secret_key, token) if backend == "tencent" and not routes else None
    )
    local = _local_settings(env) if uses_local else None
    settings = Settings(
        listen=listen,
        backend=backend,
        tencent=tencent,
        local=local,
        routes=routes,
        max_attempts=env.integer("IMS_MAX_ATTEMPTS", 3, minimum=1, maximum=10),
        qps=env.integer("IMS_QPS", 100, minimum=1, maximum=100_000),
        interactive_share=env.number("MODERATION_INTERACTIVE_SHARE", 0.5, minimum=0.0, maximum=1.0),
        stream_max_in_flight=env.integer("MODERATION_STREAM_MAX_IN_FLIGHT", 128, minimum=1, maximum=10_000),
        stream_max_in_flight_bytes=env.integer(
            "MODERATION_STREAM_MAX_IN_FLIGHT_BYTES", 64 * 1024 * 1024, minimum=1, maximum=2**40
        ),
        max_in_flight=env.integer("MODERATION_MAX_IN_FLIGHT", 512, minimum=1, maximum=100_000),
        stream_idle_timeout=env.number("MODERATION_STREAM_IDLE_TIMEOUT", 60.0, minimum=0.1, maximum=86_400),
        max_concurrent_rpcs=env.integer("MODERATION_MAX_CONCURRENT_RPCS", 1000, minimum=1, maximum=1_000_000),
        max_streams_per_connection=env.integer(
            "MODERATION_MAX_STREAMS_PER_CONNECTION", 100, minimum=1, maximum=100_000
        ),
        circuit_failures=env.integer("MODERATION_CIRCUIT_FAILURES", 5, minimum=1, maximum=1000),
        circuit_reset=env.number("MODERATION_CIRCUIT_RESET", 10.0, minimum=0.01, maximum=3600),
        backend_timeout=env.number(
            "MODERATION_BACKEND_TIMEOUT", BACKEND_TIMEOUT, minimum=0.1, maximum=BACKEND_TIMEOUT
        ),
        # In-flight calls may take the whole backend timeout, so the grace period is at least that.
        shutdown_grace=env.number("MODERATION_SHUTDOWN_GRACE", 20.0, minimum=BACKEND_TIMEOUT, maximum=3600),
        drain_delay=env.number("MODERATION_DRAIN_DELAY", 0.0, minimum=0, maximum=300),
        log_level=_log_level(env),
        log_json=_log_format(env) == "json",
        metrics_listen=_metrics_listen(env),
        secrets=tuple(s for s in (secret_id, secret_key, token, *(routes.secrets if routes else ())) if s),
    )
    tls_cert, tls_key, tls_client_ca, tokens, caller_share = _caller_settings(env)
    if env.problems:
        raise ConfigError(env.problems)
    return replace(
        settings,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        auth_tokens=tokens,
        caller_share=caller_share,
        secrets=(*settings.secrets, *tokens),
    )


def _caller_settings(
    env: _Reader,
) -> tuple[Path | None, Path | None, Path | None, dict[str, str], float | None]:
    cert = _path(env, "MODERATION_TLS_CERT_FILE", is_dir=False)
    key = _path(env, "MODERATION_TLS_KEY_FILE", is_dir=False)
    client_ca = _path(env, "MODERATION_TLS_CLIENT_CA_FILE", is_dir=False)
    if bool(cert) != bool(key):
        env.problems.append("MODERATION_TLS_CERT_FILE and MODERATION_TLS_KEY_FILE go together")
    if client_ca and not cert:
        env.problems.append(
            "MODERATION_TLS_CLIENT_CA_FILE (mutual TLS) needs MODERATION_TLS_CERT_FILE and _KEY_FILE"
        )
    tokens: dict[str, str] = {}
    tokens_file = _path(env, "MODERATION_AUTH_TOKENS_FILE", is_dir=False)
    if tokens_file:
        try:
            tokens = load_tokens(tokens_file)
        except TokenFileError as exc:
            env.problems.append(f"MODERATION_AUTH_TOKENS_FILE: {exc}")
    share = env.number("MODERATION_CALLER_SHARE", 0.0, minimum=0.0, maximum=1.0)
    return cert, key, client_ca, tokens, share or None


def _tencent_settings(env: _Reader, secret_id: str, secret_key: str, token: str) -> TencentSettings:
    if not (secret_id and secret_key):
        missing = [
            n
            for n, v in (("TENCENTCLOUD_SECRET_ID", secret_id), ("TENCENTCLOUD_SECRET_KEY", secret_key))
            if not v
        ]
        env.problems.append(f"the tencent backend needs {' and '.join(missing)} (or the *_FILE variants)")
    region = env.text("IMS_REGION", "ap-guangzhou")
    if not _REGION.fullmatch(region):
        env.problems.append(f"IMS_REGION={region!r} is not a region name such as ap-guangzhou")
    endpoint = env.text("IMS_ENDPOINT", "https://ims.tencentcloudapi.com").rstrip("/") + "/"
    parts = urlsplit(endpoint)
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.query:
        env.problems.append(
            f"IMS_ENDPOINT={endpoint!r} must be an http(s) URL such as https://ims.tencentcloudapi.com"
        )
    return TencentSettings(Credentials(secret_id, secret_key, token), region, endpoint)


def _routes(env: _Reader) -> RoutesConfig | None:
    path = _path(env, "MODERATION_ROUTES", is_dir=False)
    if path is None:
        return None
    try:
        return load_routes(path, dict(env.environ))
    except RoutesError as exc:
        env.problems.extend(f"MODERATION_ROUTES: {problem}" for problem in exc.problems)
        return None


def _local_settings(env: _Reader) -> LocalSettings:
    defaults = LocalSettings()
    return LocalSettings(
        policy_file=_path(env, "MODERATION_LOCAL_POLICY", is_dir=False) or defaults.policy_file,
        keyword_dir=_path(env, "MODERATION_LOCAL_KEYWORDS", is_dir=True),
        allow_dir=_path(env, "MODERATION_LOCAL_ALLOW_DIR", is_dir=True),
        deny_dir=_path(env, "MODERATION_LOCAL_DENY_DIR", is_dir=True),
        workers=env.integer("MODERATION_LOCAL_WORKERS", defaults.workers, minimum=1, maximum=64),
        fetch=FetchPolicy(allowed_networks=_networks(env, "MODERATION_FETCH_ALLOW_NETWORKS")),
    )


def _path(env: _Reader, name: str, *, is_dir: bool) -> Path | None:
    raw = env.text(name)
    if not raw:
        return None
    path = Path(raw)
    if not (path.is_dir() if is_dir else path.is_file()):
        env.problems.append(f"{name}={raw!r} is not an existing {'folder' if is_dir else 'file'}")
        return None
    return path


def _networks(env: _Reader, name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for part in filter(None, (p.strip() for p in env.text(name).split(","))):
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            env.problems.append(f"{name}: {part!r} is not a network such as 127.0.0.0/8 or ::1/128")
    return tuple(networks)


def _log_format(env: _Reader) -> str:
    log_format = env.text("MODERATION_LOG_FORMAT", "json").lower()
    if log_format not in {"json", "text"}:
        env.problems.append(f"MODERATION_LOG_FORMAT={log_format!r} must be json or text")
    return log_format


def _metrics_listen(env: _Reader) -> str | None:
    listen = env.text("MODERATION_METRICS_LISTEN", "[::]:9464")
    if listen.lower() == "off":
        return None
    if not re.fullmatch(r".*:\d{1,5}", listen):
        env.problems.append(f"MODERATION_METRICS_LISTEN={listen!r} must be HOST:PORT (e.g. [::]:9464) or off")
        return None
    return listen


def _log_level(env: _Reader) -> str:
    level = env.text("MODERATION_LOG_LEVEL", "INFO").upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        env.problems.append(f"MODERATION_LOG_LEVEL={level!r} must be DEBUG, INFO, WARNING or ERROR")
    return level
