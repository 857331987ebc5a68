"""`python -m service` as a real process with the tests' credentials, for the tests of what only a
process shows: signals, exit statuses, start-up (testbed.processes spawns it)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from emulator import ImsEmulator
from testbed.processes import spawn_service, stop_process
from tests.support.eventually import eventually
from tests.support.gateway import SECRET_ID, SECRET_KEY

SERVING = health_pb2.HealthCheckResponse.SERVING


def start_service(emulator: ImsEmulator, port: int, **extra: str) -> subprocess.Popen[str]:
    # `extra` may name its own metrics address, or other credentials.
    defaults = {
        "TENCENTCLOUD_SECRET_ID": SECRET_ID,
        "TENCENTCLOUD_SECRET_KEY": SECRET_KEY,
        "IMS_ENDPOINT": emulator.url,
        "MODERATION_METRICS_LISTEN": "127.0.0.1:0",
    }
    return spawn_service(port, **{**defaults, **extra})


async def wait_serving(channel: grpc.aio.Channel, *, within: float = 60.0) -> None:
    """Until health says SERVING; NOT_SERVING (models still loading) and refused connections alike wait
    and ask again, up to `within` seconds."""
    health = health_pb2_grpc.HealthStub(channel)

    async def serving() -> bool:
        try:
            return bool((await health.Check(health_pb2.HealthCheckRequest(), timeout=1)).status == SERVING)
        except grpc.aio.AioRpcError:
            return False

    await eventually(serving, within=within, every=0.1)


async def stop_gateway(*processes: subprocess.Popen[Any]) -> None:
    """SIGTERM to each, as an orchestrator would, then SIGKILL after STOP_TIMEOUT: none is ever left
    running past its test, and one that needed the SIGKILL fails it (a gateway must exit on SIGTERM).
    One that had already ended (a test killed it) is left as it is."""
    running = [p for p in processes if p.poll() is None]
    codes = await asyncio.gather(*(asyncio.to_thread(stop_process, p) for p in running))
    assert -signal.SIGKILL not in codes, f"a gateway outlived SIGTERM (exit statuses {codes})"
