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
from pathlib import Path
from typing import Annotated, Literal, Self

import aiohttp
import certifi
import yarl
from pydantic import AfterValidator, Field, FilePath, model_validator

from backends.base import Backend
from backends.errors import BackendError, Kind
from backends.options import BackendOptions, Secret, secret_values
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

__all__ = ["PRIVATE", "BearerAuth", "PrivateOptions", "private_backend"]


class BearerAuth:
    """`Authorization: Bearer <token>`, as deployments behind an API gateway commonly expect."""

    reads_body = False

    def __init__(self, token: str) -> None:
        self._headers = {"Authorization": f"Bearer {token}"}

    def headers(self, request: Outgoing) -> dict[str, str]:
        return self._headers


def private_backend(options: PrivateOptions, *, name: str = "private") -> ImsBackend:
    """An `ImsBackend` for the deployment; ValueError if its TLS files cannot be loaded. The account it
    spends is named by its `budget_key`, by default its TC3 key id if it has one."""
    auth: RequestAuth | None = None
    # The options have tied credentials to auth "tc3" and a token to "bearer".
    if options.credentials is not None:
        auth = TC3Auth(options.credentials, service=SERVICE)
    elif options.token is not None:
        auth = BearerAuth(options.token.get_secret_value())
    url = yarl.URL(options.url).with_path(options.path)
    endpoint = ImsEndpoint(
        url=str(url), region=options.region, version=options.version, action=options.action
    )
    return ImsBackend(
        name=name,
        endpoint=endpoint,
        auth=auth,
        ssl_context=_ssl_context(options) if url.scheme == "https" else None,
        classify=functools.partial(_tls_failure_is_misconfiguration, name),
        scrubber=Scrubber(secret_values(options)),
        backend_type="private",
        account=options.budget_key or options.account(),
    )


def _ssl_context(options: PrivateOptions) -> ssl.SSLContext:
    # An explicit bundle, or certifi's like every other backend: never the ambient SSL_CERT_* variables.
    cafile = options.ca_file or Path(certifi.where())
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as error:
        raise ValueError(f"cannot load the CA file {cafile}: {error}") from None
    if options.client_cert_file is not None:
        try:
            context.load_cert_chain(options.client_cert_file, options.client_key_file)
        except (OSError, ssl.SSLError) as error:
            raise ValueError(
                f"cannot load the client certificate {options.client_cert_file} with its key "
                f"{options.client_key_file}: {error}"
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


def _deployment_url(url: str) -> str:
    try:
        parsed = yarl.URL(url)
    except ValueError as error:  # UnicodeError too, for a host IDNA refuses
        raise ValueError(f"is not a URL: {error}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("must be http:// or https://<host>")
    if parsed.path not in ("", "/") or parsed.query_string or parsed.fragment:
        raise ValueError("must be scheme, host and port only; give the request path as `path`")
    return url


def _request_path(path: str) -> str:
    if not path.startswith("/") or "?" in path or "#" in path:
        raise ValueError("must start with / and carry no query")
    return path


class PrivateOptions(BackendOptions):
    """A routing-file table: where the deployment is, how requests authenticate, whom to trust.
    An inconsistent combination is refused with the table's other problems."""

    url: Annotated[str, AfterValidator(_deployment_url)] = Field(
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
    path: Annotated[str, AfterValidator(_request_path)] = Field(
        "/", description="the request path, signed as the canonical URI under TC3."
    )
    ca_file: FilePath | None = Field(None, description="CA bundle (PEM) that verifies the deployment.")
    client_cert_file: FilePath | None = Field(None, description="client certificate (PEM) for mutual TLS.")
    client_key_file: FilePath | None = Field(None, description="its private key (PEM).")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        pair = [part is not None for part in (self.secret_id, self.secret_key)]
        if (self.auth == "tc3") != all(pair) or (self.auth != "tc3" and any(pair)):
            raise ValueError("credentials are required with auth 'tc3', and used with it only")
        if (self.auth == "bearer") != (self.token is not None):
            raise ValueError("a token is required with auth 'bearer', and used with it only")
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        tls_files = (self.ca_file, self.client_cert_file, self.client_key_file)
        if yarl.URL(self.url).scheme != "https" and any(f is not None for f in tls_files):
            raise ValueError("a CA file or client certificate needs an https:// URL")
        return self

    @property
    def credentials(self) -> Credentials | None:
        """The TC3 key pair (auth `tc3`), else None."""
        if self.secret_id is None or self.secret_key is None:
            return None
        return Credentials(self.secret_id.get_secret_value(), self.secret_key.get_secret_value())

    def account(self) -> str | None:
        # Bearer and unauthenticated deployments have no account unless the operator names one.
        return self.credentials.secret_id if self.credentials else None


def _build(name: str, options: PrivateOptions, context: BuildContext) -> Backend:
    return private_backend(options, name=name)


PRIVATE = BackendType(
    name="private",
    summary="an IMS-compatible deployment in your own network (TC3, bearer or no auth; private CA, mTLS)",
    options=PrivateOptions,
    build=_build,
    from_environment=False,
)
