"""What a platform team relies on: health, reflection, a loud port clash and a graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, Suggestion

from emulator import ImsEmulator
from emulator.images import make_png
from service.factory import build_backend
from service.server import CLOSE_TIMEOUT, PortInUseError, build_server
from testbed.processes import free_port
from tests.support.eventually import eventually
from tests.support.gateway import SECRET_ID, SECRET_KEY, gateway_settings
from tests.support.service_process import start_service, wait_serving

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.mark.parametrize("service", ["", "moderation.v1.ModerationService"])
async def test_health_serving(channel: grpc.aio.Channel, service: str) -> None:
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    assert response.status == SERVING


async def test_reflection_lists_the_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    response = await call.read()
    names = {service.name for service in response.list_services_response.service}
    assert {"moderation.v1.ModerationService", "grpc.health.v1.Health"} <= names
    call.cancel()


async def test_reflection_serves_the_contract(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="moderation.v1.ModerationService")
    call = stub.ServerReflectionInfo(iter([request]))
    response = await call.read()
    assert response.file_descriptor_response.file_descriptor_proto
    call.cancel()


async def test_port_clash_fails_loudly(emulator: ImsEmulator) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = gateway_settings(emulator, listen=f"127.0.0.1:{port}")
        backend = build_backend(settings)
        with pytest.raises(PortInUseError, match=str(port)):
            build_server(settings, backend)
        await backend.aclose()


@pytest.fixture
def slow_emulator() -> Iterator[ImsEmulator]:
    from emulator import EmulatorConfig

    config = EmulatorConfig(secret_id=SECRET_ID, secret_key=SECRET_KEY, latency=1.5)
    with ImsEmulator(config, host="127.0.0.1", port=0) as emulator:
        yield emulator


@pytest.mark.system
@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
async def test_sigterm_drains_in_flight_calls(slow_emulator: ImsEmulator, event_loop: str) -> None:
    port = free_port()
    process = start_service(
        slow_emulator, port, MODERATION_DRAIN_DELAY="0.5", MODERATION_EVENT_LOOP=event_loop
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await wait_serving(channel)
            stub = moderation_service_pb2_grpc.ModerationServiceStub(channel)
            in_flight = asyncio.ensure_future(
                stub.ModerateImage(ModerateImageRequest(content=make_png(256, 256)))
            )
            await eventually(lambda: slow_emulator.stats.max_in_flight == 1, within=5)  # at the backend
            process.send_signal(signal.SIGTERM)
            health = health_pb2_grpc.HealthStub(channel)

            async def draining() -> bool:
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                return bool(answer.status == NOT_SERVING)

            # Within the drain delay, while health still answers.
            await eventually(draining, within=0.5, every=0.05)
            result = await in_flight
            assert result.suggestion == Suggestion.SUGGESTION_PASS
        returncode = await asyncio.to_thread(process.wait, 10)
        output = process.stdout.read() if process.stdout else ""
    finally:
        process.kill()
    assert returncode == 0, output
    assert f"on the {event_loop} event loop" in output
    assert "shutting down" in output
    assert SECRET_KEY not in output


@pytest.mark.system
async def test_port_clash_exits_with_a_message(emulator: ImsEmulator) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = start_service(emulator, taken.getsockname()[1])
        returncode = await asyncio.to_thread(process.wait, 20)
        output = process.stdout.read() if process.stdout else ""
    assert returncode == 3
    assert "cannot listen on 127.0.0.1:" in output


@pytest.mark.system
async def test_tencent_without_credentials_fails_fast_naming_the_variables() -> None:
    env = {"PATH": os.environ["PATH"], "MODERATION_BACKEND": "tencent"}
    process = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "service"], env=env, capture_output=True, text=True, timeout=20
    )
    assert process.returncode == 2
    assert "TENCENTCLOUD_SECRET_ID" in process.stderr
    assert "TENCENTCLOUD_SECRET_KEY" in process.stderr


@pytest.mark.system
async def test_every_configuration_problem_at_once_and_no_value_echoed() -> None:
    env = {
        "PATH": os.environ["PATH"],
        "TENCENTCLOUD_SECRET_ID": SECRET_ID,
        "TENCENTCLOUD_SECRET_KEY": SECRET_KEY,
        "IMS_ENDPOINT": f"https://{SECRET_ID}:{SECRET_KEY}@ims.example",
        "IMS_QPS": "lots",
        "MODERATION_LOG_LEVEL": SECRET_KEY,
    }
    process = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "service"], env=env, capture_output=True, text=True, timeout=20
    )
    assert process.returncode == 2
    for name in ("IMS_ENDPOINT", "IMS_QPS", "MODERATION_LOG_LEVEL"):
        assert name in process.stderr
    assert SECRET_ID not in process.stderr + process.stdout
    assert SECRET_KEY not in process.stderr + process.stdout


async def test_a_part_that_never_closes_leaves_the_shutdown_in_time(
    emulator: ImsEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A backend stuck closing (a Redis or an endpoint gone quiet) is left behind with a log line: the
    process must exit before its orchestrator's patience runs out."""
    settings = gateway_settings(emulator)
    backend = build_backend(settings)
    closed = backend.aclose
    never = asyncio.Event()

    async def stuck() -> None:
        await closed()
        await never.wait()

    backend.aclose = stuck  # type: ignore[method-assign]
    gateway = build_server(settings, backend)
    await gateway.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(gateway.stop(), timeout=CLOSE_TIMEOUT + 5)
    assert loop.time() - started < settings.drain_delay + CLOSE_TIMEOUT + 2
    assert f"shutdown: closing backend '{backend.name}' took over" in caplog.text
