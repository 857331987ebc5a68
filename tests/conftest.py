"""Fixtures: the IMS emulator on loopback and the real gateway, built by the production build_server();
and each test's tier (unit, integration, system: see pyproject.toml's markers) with its default timeout."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

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

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "system")
# Every test of these modules runs a program of the project as its own process (`python -m service`, a
# make target, the image) or a build tool over shipped files; in other modules a test that does says so
# with its own mark.
SYSTEM_MODULES = frozenset(
    {
        "test_cache_coalescing_callers.py",
        "test_cache_fingerprint.py",
        "test_cache_fleet.py",
        "test_cache_redis_shapes.py",
        "test_caller_label.py",
        "test_client_package.py",
        "test_contract.py",
        "test_credentials_process.py",
        "test_credentials_stalled.py",
        "test_deploy_image.py",
        "test_fleet_log_stream.py",
        "test_fleet_processes.py",
        "test_hostile_files.py",
        "test_load_budget.py",
        "test_local_bombs.py",
        "test_make_image.py",
        "test_make_run.py",
        "test_outward_scrubbing.py",
        "test_quotas_budget.py",
        "test_quotas_fleet.py",
        "test_tasks_accounts.py",
        "test_tasks_fleet.py",
    }
)
# Seconds a test may take before pytest-timeout fails it, by tier, unless it carries its own mark: what
# the tiers run and wait on differs by orders of magnitude (the slowest seen in each tier's heaviest
# modules, on 2 loaded cores: unit 7 s, integration 16 s, system 27 s).
TIER_TIMEOUTS = {"unit": 60, "integration": 120, "system": 300}


def _tier(item: pytest.Item) -> str:
    """tests/unit/ is the unit tier; a module of SYSTEM_MODULES the system tier; elsewhere a test's own
    tier mark, else integration."""
    path = Path(item.path)
    if path.parent == TESTS / "unit":
        return "unit"
    if path.parent == TESTS and path.name in SYSTEM_MODULES:
        return "system"
    marked = [tier for tier in TIERS if item.get_closest_marker(tier) is not None]
    return marked[0] if marked else "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = _tier(item)
        others = [other for other in TIERS if other != tier and item.get_closest_marker(other) is not None]
        if others:
            raise pytest.UsageError(f"{item.nodeid} is in the {tier} tier, not {' and '.join(others)}")
        item.add_marker(tier)
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TIER_TIMEOUTS[tier]))


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
