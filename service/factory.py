"""Builds the configured backends: the one place that knows every backend's constructor.

The local backend is imported only when configured: its models pull in onnxruntime, OpenCV and friends.
"""

from __future__ import annotations

import httpx
from opentelemetry import trace

from backends.base import Backend
from backends.tencent.auth import Credentials, TC3Auth
from backends.tencent.client import SERVICE, ImsBackend, ImsEndpoint
from service.config import Settings
from service.routes import BackendConfig


def build_backends(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> list[Backend]:
    """Every backend the settings name: those of the routing file, or the one of MODERATION_BACKEND."""
    if settings.routes is None:
        return [build_backend(settings, transport=transport, tracer_provider=tracer_provider)]
    return [
        _routed_backend(config, settings, tracer_provider=tracer_provider)
        for config in settings.routes.backends.values()
    ]


def build_backend(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> Backend:
    if settings.backend == "tencent" and settings.tencent is not None:
        tencent = settings.tencent
        return _tencent(
            "tencent", tencent.credentials, tencent.region, tencent.endpoint, transport, tracer_provider
        )
    if settings.backend == "local" and settings.local is not None:
        return _local("local", settings)
    raise ValueError(f"no backend can be built for {settings.backend!r}")


def _tencent(
    name: str,
    credentials: Credentials,
    region: str,
    endpoint: str,
    transport: httpx.AsyncBaseTransport | None,
    tracer_provider: trace.TracerProvider | None,
) -> Backend:
    return ImsBackend(
        name=name,
        endpoint=ImsEndpoint(url=endpoint, region=region),
        auth=TC3Auth(credentials, service=SERVICE),
        transport=transport,
        tracer_provider=tracer_provider,
    )


def _local(name: str, settings: Settings) -> Backend:
    from backends.local.backend import LocalBackend

    assert settings.local is not None, "configuration enables local settings with any local backend"
    return LocalBackend(settings.local, name=name)


def _routed_backend(
    config: BackendConfig, settings: Settings, *, tracer_provider: trace.TracerProvider | None
) -> Backend:
    options = config.options
    if config.type == "local":
        return _local(config.name, settings)
    credentials = None
    if "secret_id" in options and "secret_key" in options:
        credentials = Credentials(options["secret_id"], options["secret_key"], options.get("token", ""))
    if config.type == "tencent":
        assert credentials is not None, "the routing file's validation requires tencent credentials"
        endpoint = str(options.get("endpoint", "https://ims.tencentcloudapi.com")).rstrip("/") + "/"
        region = str(options.get("region", "ap-guangzhou"))
        return _tencent(config.name, credentials, region, endpoint, None, tracer_provider)
    from backends.private import PrivateSettings, private_backend

    private = PrivateSettings(
        url=str(options["url"]),
        auth=str(options.get("auth", "tc3")),
        credentials=credentials,
        token=str(options.get("token", "")),
        **{
            k: options[k]
            for k in ("region", "version", "action", "path", "ca_file", "client_cert_file", "client_key_file")
            if k in options
        },
    )
    return private_backend(private, name=config.name, tracer_provider=tracer_provider)
