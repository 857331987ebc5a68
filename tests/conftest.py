"""Fixtures: the IMS emulator on loopback and the real gateway, built by the production build_server()."""

from __future__ import annotations

import io
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import grpc
import pytest
from moderation.v1 import moderation_service_pb2_grpc

from backends.options import BackendOptions
from backends.tencent.plugin import TencentOptions
from bench.redis_server import RedisServer, redis_server
from emulator import EmulatorConfig, ImsEmulator
from service.factory import build_backend
from service.logs import JsonFormatter
from service.routing_file import BackendConfig
from service.server import Gateway, build_server
from service.settings import Settings
from service.telemetry import Telemetry

# Fresh per run, so a scan of logs and errors for them means something.
SECRET_ID = "AKID" + secrets.token_hex(16)
SECRET_KEY = secrets.token_urlsafe(24)
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 32 * 1024 * 1024),
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
]


@pytest.fixture
def emulator() -> Iterator[ImsEmulator]:
    with ImsEmulator(
        EmulatorConfig(secret_id=SECRET_ID, secret_key=SECRET_KEY), host="127.0.0.1", port=0
    ) as emu:
        yield emu


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """Debian's redis-server on 127.0.0.1, a free port and a temporary directory; stopped at teardown."""
    with redis_server() as server:
        yield server


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


@pytest.fixture
async def make_gateway(emulator: ImsEmulator) -> AsyncIterator[GatewayFactory]:
    """Starts gateways with settings overridden per test; stops them all at teardown."""
    started: list[Gateway] = []

    async def make(telemetry: Telemetry | None = None, **overrides: object) -> Gateway:
        settings = gateway_settings(emulator, **overrides)
        # The backend adds the keys it learns to the outward scrubber of the telemetry the gateway uses.
        telemetry = telemetry or Telemetry.off()
        gateway = build_server(settings, build_backend(settings, telemetry), telemetry)
        await gateway.start()
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        await gateway.stop()


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway()


def open_channel(gateway: Gateway) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}", options=CHANNEL_OPTIONS)


@pytest.fixture
async def channel(gateway: Gateway) -> AsyncIterator[grpc.aio.Channel]:
    async with open_channel(gateway) as channel:
        yield channel


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> moderation_service_pb2_grpc.ModerationServiceStub:
    return moderation_service_pb2_grpc.ModerationServiceStub(channel)


@pytest.fixture
def access_log() -> Iterator[io.StringIO]:
    """The access log's JSON lines, as written while the test runs."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("moderation.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield buffer
    logger.removeHandler(handler)
