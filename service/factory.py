"""Builds the configured backend: the one place that knows every backend's constructor."""

from __future__ import annotations

import httpx
from opentelemetry import trace

from backends.base import Backend
from backends.local.backend import LocalBackend
from backends.tencent.auth import TC3Auth
from backends.tencent.client import SERVICE, ImsBackend, ImsEndpoint
from service.config import Settings


def build_backend(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> Backend:
    if settings.backend == "tencent" and settings.tencent is not None:
        tencent = settings.tencent
        return ImsBackend(
            name="tencent",
            endpoint=ImsEndpoint(url=tencent.endpoint, region=tencent.region),
            auth=TC3Auth(tencent.credentials, service=SERVICE),
            transport=transport,
            tracer_provider=tracer_provider,
        )
    if settings.backend == "local" and settings.local is not None:
        return LocalBackend(settings.local)
    raise ValueError(f"no backend can be built for {settings.backend!r}")
