"""The HTTP transport every remote backend shares.

httpx stays the API (auth flows, timeouts, `MockTransport` in unit tests), but the I/O runs on
aiohttp through httpx-aiohttp: at 100 requests in flight, httpcore's connection pool spent ~30 ms of
CPU per request here (33 requests/s, CPU-bound), the aiohttp transport 3.5 ms (114 requests/s, bound
by the backend's latency). `bench/` measures it.

Large bodies (a 5 MB image is 6.7 MB of base64) go to aiohttp in slices, each written once the socket
has taken the last: written at once, asyncio's transport copies whatever the socket does not take
straight away into a buffer of its own, which keeps its size for as long as the connection lives.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import cast

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

# Bodies from this size on are sent in slices of SLICE_BYTES (each a view, not a copy).
SLICED_BODY_BYTES = 1024 * 1024
SLICE_BYTES = 256 * 1024
# Failures of the transport itself: the request may never have reached the backend.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (httpx.TransportError, aiohttp.ClientError, OSError)


def pooled_transport(
    *, max_connections: int, verify: ssl.SSLContext | bool = True
) -> httpx.AsyncBaseTransport:
    """`verify=True` trusts certifi's CA bundle; an `SSLContext` brings its own CAs and client certificate."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    # trust_env=False: proxies and CA bundles come from our configuration, never from ambient variables.
    return _SlicesLargeBodies(verify=verify, limits=limits, trust_env=False)


class _SlicesLargeBodies(AiohttpTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if len(request.content) < SLICED_BODY_BYTES:
            return await super().handle_async_request(request)
        # The same request (its Content-Length too, so nothing is chunked), its body as a stream.
        sliced = httpx.Request(
            request.method,
            request.url,
            headers=request.headers,
            stream=_Slices(request.content),
            extensions=request.extensions,
        )
        return await super().handle_async_request(sliced)


class _Slices(httpx.AsyncByteStream):
    def __init__(self, body: bytes) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        view = memoryview(self._body)
        for start in range(0, len(view), SLICE_BYTES):
            # aiohttp writes any buffer; a view spares a copy of each slice.
            yield cast(bytes, view[start : start + SLICE_BYTES])
