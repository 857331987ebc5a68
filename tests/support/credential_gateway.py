"""A gateway process (`python -m service`) for the credential tests: its output drained and kept, its
metrics read, the credential counters of its tencent backend, and a scan of what it wrote for secrets."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import httpx
from moderation.v1 import moderation_service_pb2_grpc

from testbed.processes import free_port, spawn_service
from tests.support.gateway import CHANNEL_OPTIONS
from tests.support.service_process import wait_serving

Stub = moderation_service_pb2_grpc.ModerationServiceStub
ROLE_ARN = "qcs::cam::uin/100000000001:roleName/moderation-gateway"


class GatewayProcess:
    """A running `python -m service`; its output is drained as it comes, so a chatty log never blocks it."""

    def __init__(self, process: subprocess.Popen[str], port: int, metrics_port: int) -> None:
        self.process = process
        self.port = port
        self.metrics_port = metrics_port
        self._lines: list[str] = []
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self._lines)

    async def metrics(self) -> str:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"http://127.0.0.1:{self.metrics_port}/metrics")).text

    def stop(self) -> int:
        self.process.terminate()
        code = self.process.wait(timeout=30)
        self._drain.join(timeout=5)
        return code


@asynccontextmanager
async def gateway(tmp_path: Path, **settings: str) -> AsyncIterator[tuple[GatewayProcess, Stub]]:
    port, metrics_port = free_port(), free_port()
    process = spawn_service(
        port,
        # No profile file of the machine's user may be found.
        HOME=str(tmp_path),
        MODERATION_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
        **settings,
    )
    running = GatewayProcess(process, port, metrics_port)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
            await wait_serving(channel)
            yield running, Stub(channel)
    finally:
        assert running.stop() == 0, running.output


def metric(text: str, name: str, source: str) -> float:
    """The value of one counter series of the gateway's tencent backend and `source`."""
    for line in text.splitlines():
        if line.startswith(name + "{") and f'moderation_credential_source="{source}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text
