"""`python -m service` as a real process, for the tests of what only a process shows: signals, exit
statuses, start-up."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from emulator import ImsEmulator
from tests.support.eventually import eventually
from tests.support.gateway import SECRET_ID, SECRET_KEY

SERVING = health_pb2.HealthCheckResponse.SERVING


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_service(emulator: ImsEmulator, port: int, **extra: str) -> subprocess.Popen[str]:
    return spawn_service(
        port,
        TENCENTCLOUD_SECRET_ID=SECRET_ID,
        TENCENTCLOUD_SECRET_KEY=SECRET_KEY,
        IMS_ENDPOINT=emulator.url,
        # `extra` may name its own metrics address.
        **{"MODERATION_METRICS_LISTEN": "127.0.0.1:0", **extra},
    )


def spawn_service(port: int, **settings: str) -> subprocess.Popen[str]:
    """`python -m service` on `port` with only `settings` (and PATH) in its environment; the verdict
    cache off unless `settings` turn it on (most tests count the backend's calls of one image)."""
    return spawn_module("service", port, settings, subprocess.PIPE)


def spawn_module(
    module: str, port: int, settings: Mapping[str, str], output: IO[str] | int
) -> subprocess.Popen[str]:
    """`python -m module` (the service, or a test's launcher of it) as `spawn_service` says; its output
    piped, or written to the file `output`."""
    return subprocess.Popen(
        [sys.executable, "-m", module],
        env={
            "PATH": os.environ["PATH"],
            "MODERATION_LISTEN": f"127.0.0.1:{port}",
            "MODERATION_CACHE": "off",
            **settings,
        },
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
    )


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
