"""The in-process gateway as the tests build it: fresh credentials, settings on loopback, channels, and
one ModerateImage call to it."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

import grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse
from moderation.v1.moderation_service_pb2_grpc import ModerationServiceStub

from backends.options import BackendOptions
from backends.tencent.plugin import TencentOptions
from emulator import ImsEmulator
from service.routing_file import BackendConfig
from service.server import Gateway
from service.settings import Settings

# Fresh per run, so a scan of logs and errors for them means something.
SECRET_ID = "AKID" + secrets.token_hex(16)
SECRET_KEY = secrets.token_urlsafe(24)
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 32 * 1024 * 1024),
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
]


def single_backend_settings(kind: str, options: BackendOptions, **overrides: object) -> Settings:
    """Settings on loopback's port 0 with one backend, as MODERATION_BACKEND would configure it.

    Overrides of the options every backend type has (`qps`, `max_attempts`, ...) go to the backend's.
    The verdict cache is off unless a test turns it on: most tests count the backend's calls of one
    image sent many times."""
    own = {key: overrides.pop(key) for key in type(options).model_fields if key in overrides}
    backend = BackendConfig(kind, kind, options.model_copy(update=own))
    settings = Settings(listen="127.0.0.1:0", backend=kind, backends=(backend,), cache="off")
    return settings.model_copy(update=overrides)


def gateway_settings(emulator: ImsEmulator, **overrides: object) -> Settings:
    options = TencentOptions(secret_id=SECRET_ID, secret_key=SECRET_KEY, endpoint=emulator.url)
    # The emulator downloads `url` images unless a test has the gateway fetch them (tests/test_fitting.py).
    overrides = {"fetch": "backend", **overrides}
    return single_backend_settings("tencent", options, secrets=(SECRET_ID, SECRET_KEY), **overrides)


GatewayFactory = Callable[..., Awaitable[Gateway]]


def open_channel(gateway: Gateway) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}", options=CHANNEL_OPTIONS)


async def moderate(gateway: Gateway, request: ModerateImageRequest) -> ModerateImageResponse:
    async with open_channel(gateway) as channel:
        stub = ModerationServiceStub(channel)
        answer: ModerateImageResponse = await stub.ModerateImage(request, timeout=10)
        return answer
