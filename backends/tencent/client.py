"""The IMS `ImageModeration` adapter: one aiohttp session per backend, one attempt per call.

The body is serialised once and sent as those exact bytes, because the TC3 signature covers them; a
large body is signed (hashed) in a worker thread, off the event loop. Transport failures become
`BackendError`s; nothing here retries (the service's policy does). Answers are read as they arrive and
abandoned past `MAX_RESPONSE_BYTES`, so a hostile or broken endpoint cannot make the gateway buffer
more than that per call. The attempt's span (the service's CLIENT span) gets the HTTP request's
semantic-convention attributes, when it is sampled.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import yarl
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse
from opentelemetry import trace

from backends.base import Fingerprint
from backends.errors import BackendError, Kind
from backends.http import TRANSPORT_ERRORS, Body, TooLarge, body_payload, read_capped, session_factory
from backends.image_limits import IMS_IMAGE_LIMITS, ImageLimits
from backends.tencent import wire
from backends.tencent.auth import Outgoing, RequestAuth
from common.scrub import Scrubber

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
        auth: RequestAuth | None,
        max_connections: int = MAX_CONNECTIONS,
        ssl_context: ssl.SSLContext | None = None,
        classify: Callable[[Exception], BackendError | None] | None = None,
        scrubber: Scrubber | None = None,
        backend_type: str = "tencent",
        account: str | None = None,
    ) -> None:
        """`scrubber`: removes what `auth` sends (key id, key, token) from anything the endpoint echoes;
        it grows as keys rotate in. `ssl_context`: the CAs (and client certificate) for https, certifi's
        CAs when None. `classify`: a transport failure's `BackendError` when it is not a network fault
        (None: it is one). No span is made here: the service's attempt span is the request's CLIENT span
        and gets its HTTP attributes from `moderate`. `account`: whose account the calls spend (such as
        the key id), hashed into the fingerprint only.
        """
        self._name = name
        self._auth = auth
        self._classify = classify
        # The account's policies (BizTypes, libraries) and the endpoint's models decide the verdicts.
        self._fingerprint = Fingerprint.of(
            backend_type, endpoint.url, endpoint.region, endpoint.version, endpoint.action, account=account
        )
        self._scrubber = scrubber or Scrubber()
        self._http_attributes = _http_attributes(endpoint.url)
        self._url = yarl.URL(endpoint.url)
        # The Host header and the path, sent as given and signed as sent.
        self._host = self._url.host_port_subcomponent or ""
        self._path = self._url.raw_path
        self._headers = {
            "Host": self._host,
            "Content-Type": CONTENT_TYPE,
            "X-TC-Action": endpoint.action,
            "X-TC-Version": endpoint.version,
            "X-TC-Region": endpoint.region,
            "X-TC-Language": endpoint.language,
            "X-TC-RequestClient": "moderation-gateway",
        }
        self._new_session = session_factory(max_connections=max_connections, ssl_context=ssl_context)
        # Opened on first use: aiohttp binds a session to the running event loop.
        self._session: aiohttp.ClientSession | None = None

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

    @property
    def image_limits(self) -> ImageLimits:
        """IMS's, which IMS-compatible deployments share."""
        return IMS_IMAGE_LIMITS

    async def start(self) -> None:
        """Nothing to load: connections open on first use."""

    async def moderate(self, request: ModerateImageRequest, *, timeout: float) -> ModerateImageResponse:
        body = wire.request_body(request)
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(self._http_attributes)
            span.set_attribute("http.request.body.size", body.size)
        if body.size > MAX_REQUEST_BYTES:
            raise BackendError(
                Kind.INVALID_REQUEST,
                f"the encoded request is {body.size} bytes; IMS accepts at most {MAX_REQUEST_BYTES}",
                upstream_code="RequestSizeLimitExceeded",
            )
        headers = {**self._headers, **await self._authenticate(body), "Content-Length": str(body.size)}
        if self._session is None:
            self._session = self._new_session()
        try:
            async with self._session.post(
                self._url,
                data=body_payload(body),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                # A redirect would change the signed host; never follow one.
                allow_redirects=False,
            ) as response:
                if span.is_recording():
                    span.set_attribute("http.response.status_code", response.status)
                if response.status != 200:
                    raise BackendError(
                        Kind.UNAVAILABLE if response.status >= 500 else Kind.FAILED,
                        f"IMS answered HTTP {response.status}",
                        upstream_code=f"HTTP{response.status}",
                    )
                content = await read_capped(
                    response.content_length, response.content.iter_any(), MAX_RESPONSE_BYTES
                )
        except TooLarge:
            raise BackendError(
                Kind.UNAVAILABLE,
                f"IMS answered with more than {MAX_RESPONSE_BYTES} bytes",
                upstream_code=wire.MALFORMED,
            ) from None
        except TimeoutError:
            raise BackendError(Kind.TIMEOUT, f"IMS did not answer within {timeout:.3f} s") from None
        except TRANSPORT_ERRORS as exc:
            failure = self._classify(exc) if self._classify is not None else None
            if failure is not None:
                raise failure from exc
            # Errors without a RequestId never reached the API: a network fault, worth a retry.
            raise BackendError(
                Kind.UNAVAILABLE, f"network error talking to IMS: {type(exc).__name__}"
            ) from None
        result = wire.parse_response(content, self._scrubber)
        result.backend = self._name
        return result

    async def _authenticate(self, body: Body) -> dict[str, str]:
        if self._auth is None:
            return {}
        outgoing = Outgoing(host=self._host, path=self._path, content_type=CONTENT_TYPE, body=body)
        if self._auth.reads_body and body.size >= OFF_LOOP_BODY_BYTES:
            return await asyncio.to_thread(self._auth.headers, outgoing)
        return self._auth.headers(outgoing)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


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
