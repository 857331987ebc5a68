"""Fixtures: the IMS emulator on loopback and the real gateway, built by the production build_server()."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from moderation.v1 import moderation_service_pb2_grpc

from emulator import EmulatorConfig, ImsEmulator
from service.factory import build_backend
from service.logs import JsonFormatter
from service.server import Gateway, build_server
from service.telemetry import Telemetry
from testbed.redis_server import RedisServer, redis_server
from tests.support.gateway import SECRET_ID, SECRET_KEY, GatewayFactory, gateway_settings, open_channel


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


@pytest.fixture
async def make_gateway(emulator: ImsEmulator) -> AsyncIterator[GatewayFactory]:
    """Starts gateways with settings overridden per test; stops them all at teardown."""
    started: list[Gateway] = []

    async def make(telemetry: Telemetry | None = None, **overrides: object) -> Gateway:
        settings = gateway_settings(emulator, **overrides)
        gateway = build_server(settings, build_backend(settings), telemetry)
        await gateway.start()
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        await gateway.stop()


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway()


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
