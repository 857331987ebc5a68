"""Gateway replicas with quotas, through the launcher whose quota clock a test moves
(tests/support/quota_clock_service.py): their routing and tokens files, their clock, and a call as a
caller."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest

from emulator import ImsEmulator
from emulator.images import make_png
from testbed.client import open_channel, stub
from testbed.processes import free_port, spawn_module
from tests.support.gateway import SECRET_ID, SECRET_KEY
from tests.support.service_process import stop_gateway, wait_serving

TOKENS = {"uploads": secrets.token_hex(16), "others": secrets.token_hex(16)}


def bearer(caller: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {TOKENS[caller]}"),)


def write_config(folder: Path, emulator: ImsEmulator, quotas: str, *, qps: int = 5000) -> dict[str, str]:
    routes = folder / "routes.toml"
    routes.write_text(
        '[backends.cloud]\ntype = "tencent"\nsecret_id_env = "TENCENTCLOUD_SECRET_ID"\n'
        f'secret_key_env = "TENCENTCLOUD_SECRET_KEY"\nendpoint = "{emulator.url}"\nqps = {qps}\n\n'
        f'[default]\nchain = ["cloud"]\n\n{quotas}',
        encoding="utf-8",
    )
    tokens = folder / "tokens"
    tokens.write_text("".join(f"{caller} {token}\n" for caller, token in TOKENS.items()), encoding="utf-8")
    return {"MODERATION_ROUTES": str(routes), "MODERATION_AUTH_TOKENS_FILE": str(tokens)}


def set_clock(folder: Path, shanghai: datetime) -> None:
    """The replicas' quota clock shows `shanghai` now (and runs on from it)."""
    (folder / "clock").write_text(str(shanghai.timestamp() - time.time()), encoding="utf-8")


def spawn(folder: Path, index: int, port: int, settings: dict[str, str]) -> subprocess.Popen[str]:
    with (folder / f"replica{index}.log").open("w", encoding="utf-8") as log:
        return spawn_module(
            "tests.support.quota_clock_service",
            port,
            {
                "MODERATION_METRICS_LISTEN": "off",
                "MODERATION_LOG_FORMAT": "text",
                "TENCENTCLOUD_SECRET_ID": SECRET_ID,
                "TENCENTCLOUD_SECRET_KEY": SECRET_KEY,
                "QUOTA_TEST_CLOCK_FILE": str(folder / "clock"),
                **settings,
            },
            log,
        )


@contextlib.asynccontextmanager
async def replicas(folder: Path, count: int, **settings: str) -> AsyncIterator[list[str]]:
    """`count` gateways through the test launcher (its clock file in `folder`), each logging to a file."""
    if not (folder / "clock").exists():
        (folder / "clock").write_text("0", encoding="utf-8")
    ports = [free_port() for _ in range(count)]
    processes = [spawn(folder, index, port, settings) for index, port in enumerate(ports)]
    try:
        addresses = [f"127.0.0.1:{port}" for port in ports]
        for address in addresses:
            async with open_channel(address) as channel:
                await wait_serving(channel)
        yield addresses
    finally:
        await stop_gateway(*processes)


async def moderate(address: str, caller: str) -> grpc.aio.AioRpcError | None:
    """None when answered, else the error."""
    async with open_channel(address) as channel:
        try:
            await stub(channel).ModerateImage(
                ModerateImageRequest(content=make_png(64, 64, secrets.token_hex(4))),
                timeout=10,
                metadata=bearer(caller),
            )
        except grpc.aio.AioRpcError as error:
            return error
    return None
