"""The IMS `ImageModeration` adapter: one pooled `httpx.AsyncClient`, one attempt per call.

The body is serialised once and sent as those exact bytes, because the TC3 signature covers them; a
large body is signed (hashed) in a worker thread, off the event loop. Transport failures become
`BackendError`s; nothing here retries (the service's policy does). Answers are read as a stream and
abandoned past `MAX_RESPONSE_BYTES`, so a hostile or broken endpoint cannot make the gateway buffer
more than that per call. The attempt's span (the service's CLIENT span) gets the HTTP request's
semantic-convention attributes, when it is sampled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse
from opentelemetry import trace

from backends.base import Fingerprint
from backends.errors import BackendError, Kind
from backends.http import TRANSPORT_ERRORS, pooled_transport
from backends.scrub import Scrubber
from backends.tencent import wire

ACTION = "ImageModeration"
VERSION = "2020-12-29"
SERVICE = "ims"
DEFAULT_URL = "https://ims.tencentcloudapi.com/"
DEFAULT_REGION = "ap-guangzhou"
# A TC3-signed POST may carry at most 10 MiB (IMS answers RequestSizeLimitExceeded above it).
MAX_REQUEST_BYTES = 10 * 1024 * 1024
# Exactly what is signed; the SDK sends no charset either.
CONTENT_TYPE = "application/json"
# The connection pool to one endpoint, unless the caller sizes it.
MAX_CONNECTIONS = 200
# IMS answers are a few KB (a verdict with OCR text and a few hundred label details stays under
# 100 KB); 1 MiB leaves ten times that room and bounds memory at 1 MiB per call in flight.
MAX_RESPONSE_BYTES = 1024 * 1024
# Bodies from this size on are signed in a worker thread (hashlib releases the GIL). Measured here:
# a thread hop costs ~80 µs of CPU; SHA-256 takes 0.58 ms per MiB, so at 1 MiB the hop adds 13 % to
# the hash and spares the event loop 0.6 ms; a 5 MB image's 6.7 MB body would block it 3.7 ms.
OFF_LOOP_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ImsEndpoint:
    """Where and how to reach an IMS-compatible API."""

    url: str = DEFAULT_URL
    region: str = DEFAULT_REGION
    version: str = VERSION
    action: str = ACTION
    language: str = "en-US"


class ImsBackend:
    """A `Backend` speaking the IMS wire protocol; `auth` signs (TC3) or not, as the endpoint wants."""

    def __init__(
        self,
        *,
        name: str,
        endpoint: ImsEndpoint,
        auth: httpx.Auth | None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = MAX_CONNECTIONS,
        scrubber: Scrubber | None = None,
        backend_type: str = "tencent",
        account: str | None = None,
    ) -> None:
        """`scrubber`: removes what `auth` sends (key id, key, token) from anything the endpoint echoes;
        it grows as keys rotate in. No span is made here: the service's attempt span is the request's
        CLIENT span and gets its HTTP attributes from `moderate`. `account`: whose account the calls
        spend (such as the key id), hashed into the fingerprint only.
        """
        self._name = name
        self._endpoint = endpoint
        # The account's policies (BizTypes, libraries) and the endpoint's models decide the verdicts.
        self._fingerprint = Fingerprint.of(
            backend_type, endpoint.url, endpoint.region, endpoint.version, endpoint.action, account=account
        )
        self._scrubber = scrubber or Scrubber()
        self._http_attributes = _http_attributes(endpoint.url)
        self._client = httpx.AsyncClient(
            auth=auth if auth is None else SignsLargeBodiesOffLoop(auth),
            transport=transport or pooled_transport(max_connections=max_connections),
            headers={
                "Content-Type": CONTENT_TYPE,
                "X-TC-Action": endpoint.action,
                "X-TC-Version": endpoint.version,
                "X-TC-Region": endpoint.region,
                "X-TC-Language": endpoint.language,
                "X-TC-RequestClient": "moderation-gateway",
            },
            # IMS's redirects would change the signed host; never follow them.
            follow_redirects=False,
            trust_env=False,
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def fingerprint(self) -> Fingerprint:
        return self._fingerprint

    @property
    def concurrency(self) -> None:
        """Remote: the rate governor and the stream window bound what is in flight."""
        return None

    async def start(self) -> None:
        """Nothing to load: connections open on first use."""

    async def moderate(self, request: ModerateImageRequest, *, timeout: float) -> ModerateImageResponse:
        body = wire.request_body(request)
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(self._http_attributes)
            span.set_attribute("http.request.body.size", len(body))
        if len(body) > MAX_REQUEST_BYTES:
            raise BackendError(
                Kind.INVALID_REQUEST,
                f"the encoded request is {len(body)} bytes; IMS accepts at most {MAX_REQUEST_BYTES}",
                upstream_code="RequestSizeLimitExceeded",
            )
        try:
            async with _exchange(self._client, self._endpoint.url, body, timeout) as response:
                if span.is_recording():
                    span.set_attribute("http.response.status_code", response.status_code)
                if response.status_code != 200:
                    raise BackendError(
                        Kind.UNAVAILABLE if response.status_code >= 500 else Kind.FAILED,
                        f"IMS answered HTTP {response.status_code}",
                        upstream_code=f"HTTP{response.status_code}",
                    )
                content = await _read_capped(response)
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout):
            raise BackendError(Kind.TIMEOUT, f"IMS did not answer within {timeout:.3f} s") from None
        except UnicodeError:
            # httpx builds `next_request` from any Location header, and idna refuses its host.
            raise BackendError(
                Kind.UNAVAILABLE,
                "IMS answered with a redirect to an invalid URL",
                upstream_code=wire.MALFORMED,
            ) from None
        except TRANSPORT_ERRORS as exc:
            # Errors without a RequestId never reached the API: a network fault, worth a retry.
            # httpx-aiohttp reports aiohttp's errors under httpx names (a reset mid-answer becomes
            # ConnectTimeout): name the original, or operators chase the wrong problem.
            cause = exc.__cause__ or exc
            raise BackendError(
                Kind.UNAVAILABLE, f"network error talking to IMS: {type(cause).__name__}"
            ) from None
        result = wire.parse_response(content, self._scrubber)
        result.backend = self._name
        return result

    async def aclose(self) -> None:
        await self._client.aclose()


def _http_attributes(url: str) -> dict[str, str | int]:
    """The HTTP client semantic-convention attributes every request to `url` shares; `url.full` is
    rebuilt from scheme, host, port and path, so nothing else the URL carries reaches a span."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    shown_host = f"[{host}]" if ":" in host else host
    return {
        "http.request.method": "POST",
        "url.full": f"{parts.scheme}://{shown_host}:{port}{parts.path or '/'}",
        "server.address": host,
        "server.port": port,
    }


class SignsLargeBodiesOffLoop(httpx.Auth):
    """Runs a synchronous `httpx.Auth` (TC3 hashes the whole body) in a worker thread for bodies of
    `OFF_LOOP_BODY_BYTES` or more, so the event loop keeps serving meanwhile; small bodies, and auths
    with an asynchronous flow of their own, run on the loop as they would unwrapped."""

    requires_request_body = True

    def __init__(self, auth: httpx.Auth) -> None:
        self._auth = auth
        self.requires_response_body = auth.requires_response_body

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if type(self._auth).async_auth_flow is not httpx.Auth.async_auth_flow:
            flow = self._auth.async_auth_flow(request)
            signed = await anext(flow)
            while True:
                response = yield signed
                try:
                    signed = await flow.asend(response)
                except StopAsyncIteration:
                    return
        steps = self._auth.auth_flow(request)
        if len(request.content) >= OFF_LOOP_BODY_BYTES:
            signed = await asyncio.to_thread(next, steps)
        else:
            signed = next(steps)
        while True:
            response = yield signed
            try:
                signed = steps.send(response)
            except StopIteration:
                return


# What a finished response's stream becomes (see `_exchange`).
_SPENT = httpx.ByteStream(b"")


@contextlib.asynccontextmanager
async def _exchange(
    client: httpx.AsyncClient, url: str, body: bytes, timeout: float
) -> AsyncIterator[httpx.Response]:
    """`client.stream` of one POST, the response then let go of at once.

    httpx ties a streamed response and its stream in a reference cycle, so each finished exchange, the
    request's body with it, waited for the collector's next full pass: 23 bodies of 6.7 MB were alive
    where 13 calls were in flight (measured, streaming 5 MB images). Replacing the stream once the
    response is closed breaks the cycle, and the body goes when the call returns.
    """
    response = None
    try:
        async with client.stream("POST", url, content=body, timeout=httpx.Timeout(timeout)) as response:
            yield response
    finally:
        if response is not None:
            response.stream = _SPENT


async def _read_capped(response: httpx.Response) -> bytes:
    """The body, or the retryable MalformedResponse once it passes `MAX_RESPONSE_BYTES`."""
    too_large = BackendError(
        Kind.UNAVAILABLE,
        f"IMS answered with more than {MAX_RESPONSE_BYTES} bytes",
        upstream_code=wire.MALFORMED,
    )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise too_large
    # Counted as it arrives (decoded): a missing or lying Content-Length must not let a body in.
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            raise too_large
    return bytes(body)
