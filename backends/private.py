"""A private deployment: an IMS-compatible engine inside the customer's own network.

It speaks the IMS wire protocol, so the backend is `ImsBackend` with what differs configured: the URL
and request path, how requests authenticate (TC3 with the deployment's own keys, a bearer token, or
nothing) and the TLS trust (a private CA, a client certificate for mutual TLS).

A TLS failure here is the operator's to fix (a wrong CA bundle, a missing or refused client
certificate, a certificate for another host name), so it is `Kind.MISCONFIGURED` and never retried,
whereas a refused or dropped connection stays a retryable network fault.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Self

import aiohttp
import certifi
import yarl
from pydantic import Field, FilePath, model_validator

from backends.base import Backend
from backends.errors import BackendError, Kind
from backends.options import BackendOptions, Secret
from backends.plugin import BackendType, BuildContext
from backends.tencent.auth import Credentials, Outgoing, RequestAuth, TC3Auth
from backends.tencent.client import (
    ACTION,
    DEFAULT_REGION,
    SERVICE,
    VERSION,
    ImsBackend,
    ImsEndpoint,
)
from backends.tencent.plugin import Region
from common.scrub import Scrubber

__all__ = ["PRIVATE", "BearerAuth", "PrivateOptions", "PrivateSettings", "private_backend"]

AUTH_MODES = frozenset({"tc3", "bearer", "none"})


@dataclass(frozen=True)
class PrivateSettings:
    """Where the deployment is and how to talk to it; an inconsistent combination raises ValueError."""

    url: str  # scheme, host and port only, e.g. https://ims.internal:8443/
    auth: str = "tc3"
    credentials: Credentials | None = None  # for tc3
    token: str = field(default="", repr=False)  # for bearer
    region: str = DEFAULT_REGION
    version: str = VERSION
    action: str = ACTION
    path: str = "/"  # the request path, which TC3 signs as the canonical URI
    ca_file: Path | None = None  # CA bundle that verifies the server; certifi's when None
    client_cert_file: Path | None = None  # PEM client certificate for mutual TLS
    client_key_file: Path | None = None  # its PEM private key

    def __post_init__(self) -> None:
        try:
            url = yarl.URL(self.url)
        except ValueError as error:  # UnicodeError too, for a host IDNA refuses
            raise ValueError(f"the private deployment URL {self.url!r} is not a URL: {error}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"the private deployment URL {self.url!r} must be http:// or https://<host>")
        if url.path not in ("", "/") or url.query_string or url.fragment:
            raise ValueError(
                f"the private deployment URL {self.url!r} must be scheme, host and port only; "
                "give the request path as `path`"
            )
        if not self.path.startswith("/") or "?" in self.path or "#" in self.path:
            raise ValueError(f"the request path {self.path!r} must start with / and carry no query")
        if self.auth not in AUTH_MODES:
            raise ValueError(f"auth {self.auth!r} is not one of {', '.join(sorted(AUTH_MODES))}")
        if (self.auth == "tc3") != (self.credentials is not None):
            raise ValueError("credentials are required with auth 'tc3', and used with it only")
        if (self.auth == "bearer") != bool(self.token):
            raise ValueError("a token is required with auth 'bearer', and used with it only")
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        tls_files = (self.ca_file, self.client_cert_file, self.client_key_file)
        if url.scheme != "https" and any(f is not None for f in tls_files):
            raise ValueError("a CA file or client certificate needs an https:// URL")


class BearerAuth:
    """`Authorization: Bearer <token>`, as deployments behind an API gateway commonly expect."""

    reads_body = False

    def __init__(self, token: str) -> None:
        self._headers = {"Authorization": f"Bearer {token}"}

    def headers(self, request: Outgoing) -> dict[str, str]:
        return self._headers


def private_backend(
    settings: PrivateSettings, *, name: str = "private", account: str | None = None
) -> ImsBackend:
    """An `ImsBackend` for the deployment; ValueError if its TLS files cannot be loaded. `account`: the
    name of the account it spends (a budget key), by default its TC3 key id if it has one."""
    auth: RequestAuth | None = None
    # PrivateSettings has tied credentials to auth "tc3" and a token to "bearer".
    if settings.credentials is not None:
        auth = TC3Auth(settings.credentials, service=SERVICE)
    elif settings.token:
        auth = BearerAuth(settings.token)
    url = yarl.URL(settings.url).with_path(settings.path)
    endpoint = ImsEndpoint(
        url=str(url), region=settings.region, version=settings.version, action=settings.action
    )
    secrets = (*settings.credentials.secrets, settings.token) if settings.credentials else (settings.token,)
    return ImsBackend(
        name=name,
        endpoint=endpoint,
        auth=auth,
        ssl_context=_ssl_context(settings) if url.scheme == "https" else None,
        classify=functools.partial(_tls_failure_is_misconfiguration, name),
        scrubber=Scrubber(secrets),
        backend_type="private",
        # Bearer and unauthenticated deployments have no account unless the operator names one.
        account=account or (settings.credentials.secret_id if settings.credentials else None),
    )


def _ssl_context(settings: PrivateSettings) -> ssl.SSLContext:
    # An explicit bundle, or certifi's like every other backend: never the ambient SSL_CERT_* variables.
    cafile = settings.ca_file or Path(certifi.where())
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as error:
        raise ValueError(f"cannot load the CA file {cafile}: {error}") from None
    if settings.client_cert_file is not None:
        try:
            context.load_cert_chain(settings.client_cert_file, settings.client_key_file)
        except (OSError, ssl.SSLError) as error:
            raise ValueError(
                f"cannot load the client certificate {settings.client_cert_file} with its key "
                f"{settings.client_key_file}: {error}"
            ) from None
    return context


def _tls_failure_is_misconfiguration(name: str, exc: Exception) -> BackendError | None:
    """A TLS failure as `BackendError(MISCONFIGURED)`; None for every other transport failure, which
    `ImsBackend` then reports as a retryable network fault."""
    failure = _tls_failure(exc)
    if failure is None:
        return None
    return BackendError(
        Kind.MISCONFIGURED, f"TLS handshake with the private deployment {name!r} failed: {failure}"
    )


# Not a TLS configuration problem: the connection broke (the peer went away mid-record or closed it).
_TLS_IO_ERRORS = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


def _tls_failure(exc: BaseException) -> str | None:
    """What failed, if TLS did: found among the causes, as aiohttp wraps the ssl module's error."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, aiohttp.ClientError):
            # aiohttp's wrappers subclass the ssl errors without their details; the original is a cause.
            pass
        elif isinstance(cause, ssl.SSLCertVerificationError):
            # Our check of the server: an unknown CA, another host name, an expired certificate.
            return f"certificate verify failed: {cause.verify_message}"
        elif isinstance(cause, ssl.SSLError) and not isinstance(cause, _TLS_IO_ERRORS):
            # An alert from the server (our client certificate missing or refused) or a protocol
            # mismatch, such as https to a plain-http port.
            return (cause.reason or str(cause)).lower().replace("_", " ")
        cause = cause.__cause__ or cause.__context__
    return None


class PrivateOptions(BackendOptions):
    """A routing-file table: where the deployment is, how requests authenticate, whom to trust."""

    url: str = Field(
        description="scheme, host and port of the deployment, e.g. `https://ims.internal:8443/`."
    )
    auth: Literal["tc3", "bearer", "none"] = Field(
        "tc3", description="how requests authenticate: `tc3`, `bearer` or `none`."
    )
    secret_id: Secret | None = Field(None, description="the deployment's TC3 key id (auth `tc3`)")
    secret_key: Secret | None = Field(None, description="the deployment's TC3 key (auth `tc3`)")
    token: Secret | None = Field(None, description="the bearer token (auth `bearer`)")
    region: Region = Field(DEFAULT_REGION, description="`X-TC-Region`.")
    version: str = Field(VERSION, description="`X-TC-Version`.")
    action: str = Field(ACTION, description="`X-TC-Action`.")
    path: str = Field("/", description="the request path, signed as the canonical URI under TC3.")
    ca_file: FilePath | None = Field(None, description="CA bundle (PEM) that verifies the deployment.")
    client_cert_file: FilePath | None = Field(None, description="client certificate (PEM) for mutual TLS.")
    client_key_file: FilePath | None = Field(None, description="its private key (PEM).")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        self.settings()  # raises ValueError, which pydantic reports with the other problems
        return self

    def settings(self) -> PrivateSettings:
        token = self.token.get_secret_value() if self.token else ""
        credentials = None
        if self.secret_id is not None and self.secret_key is not None:
            credentials = Credentials(
                self.secret_id.get_secret_value(), self.secret_key.get_secret_value(), token
            )
        return PrivateSettings(
            url=self.url,
            auth=self.auth,
            credentials=credentials,
            token=token,
            region=self.region,
            version=self.version,
            action=self.action,
            path=self.path,
            ca_file=self.ca_file,
            client_cert_file=self.client_cert_file,
            client_key_file=self.client_key_file,
        )


def _build(name: str, options: PrivateOptions, context: BuildContext) -> Backend:
    return private_backend(options.settings(), name=name, account=options.budget_key)


PRIVATE = BackendType(
    name="private",
    summary="an IMS-compatible deployment in your own network (TC3, bearer or no auth; private CA, mTLS)",
    options=PrivateOptions,
    build=_build,
    from_environment=False,
)
