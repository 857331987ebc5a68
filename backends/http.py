"""The HTTP transport every remote backend shares.

httpx stays the API (auth flows, timeouts, `MockTransport` in unit tests), but the I/O runs on
aiohttp through httpx-aiohttp: at 100 requests in flight, httpcore's connection pool spent ~30 ms of
CPU per request here (33 requests/s, CPU-bound), the aiohttp transport 3.5 ms (114 requests/s, bound
by the backend's latency). `bench/` measures it.
"""

from __future__ import annotations

import ssl

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

# Failures of the transport itself: the request may never have reached the backend.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (httpx.TransportError, aiohttp.ClientError, OSError)


def pooled_transport(
    *, max_connections: int, verify: ssl.SSLContext | bool = True
) -> httpx.AsyncBaseTransport:
    """`verify=True` trusts certifi's CA bundle; an `SSLContext` brings its own CAs and client certificate."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    # trust_env=False: proxies and CA bundles come from our configuration, never from ambient variables.
    return AiohttpTransport(verify=verify, limits=limits, trust_env=False)
