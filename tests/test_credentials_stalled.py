"""A credential endpoint that trickles its answer, under a real gateway process (`python -m service`):
each byte comes within httpx's read timeout, so only the refresh's overall deadline ends the load.

The CVM metadata and STS emulators trickle on loopback (`LoopbackServer.trickle_seconds`); the stalled
refresh is logged and counted, retried, and once the endpoint answers again calls work within the
deadline plus a backoff step, although the temporary key expired in between.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager, contextmanager
from pathlib import Path

import grpc
import pytest
from moderation.v1.moderation_service_pb2 import ModerateImageRequest

from backends.tencent.credentials.refresh import BACKOFF_FLOOR_SECONDS, LOAD_DEADLINE_SECONDS
from emulator import EmulatorConfig, ImsEmulator, KeyIssuer, MetadataEmulator, StsEmulator
from emulator.loopback import LoopbackServer
from tests.support.credential_gateway import (
    ROLE_ARN,
    GatewayProcess,
    Stub,
    assert_no_secret,
    gateway,
    metric,
)
from tests.support.credentials import OLD_ID, OLD_KEY, PNG
from tests.support.eventually import eventually

Endpoint = tuple[LoopbackServer, dict[str, str]]
Source = Callable[[ImsEmulator, Path], AbstractContextManager[Endpoint]]
LIFETIME = 6.0
# Slow enough that no answer completes within the deadline, fast enough for every read to beat
# httpx's 5 s timeout.
TRICKLE_SECONDS = 0.5
CIRCUIT_RESET_SECONDS = 0.5
STALLED = f"failed: no credentials within {LOAD_DEADLINE_SECONDS:.0f} s (the source stalled)"


@pytest.fixture
def ims() -> Iterator[ImsEmulator]:
    with ImsEmulator(EmulatorConfig(secret_id=OLD_ID, secret_key=OLD_KEY, latency=0.01)) as emulator:
        yield emulator


@contextmanager
def cvm_role(ims: ImsEmulator, tmp_path: Path) -> Iterator[Endpoint]:
    with MetadataEmulator(KeyIssuer(ims, lifetime=LIFETIME)) as metadata:
        yield metadata, {"TENCENTCLOUD_METADATA_URL": metadata.metadata_url}


@contextmanager
def oidc_role(ims: ImsEmulator, tmp_path: Path) -> Iterator[Endpoint]:
    token_file = tmp_path / "oidc-token"
    token_file.write_text("web-identity-1\n")
    issuer = KeyIssuer(ims, lifetime=LIFETIME)
    with StsEmulator(
        issuer, provider_id="tke-oidc", role_arn=ROLE_ARN, web_identity_tokens={"web-identity-1"}
    ) as sts:
        yield (
            sts,
            {
                "TKE_REGION": "ap-shanghai",
                "TKE_PROVIDER_ID": "tke-oidc",
                "TKE_WEB_IDENTITY_TOKEN_FILE": str(token_file),
                "TKE_ROLE_ARN": ROLE_ARN,
                "TENCENTCLOUD_STS_ENDPOINT": sts.url,
            },
        )


def role_gateway(
    tmp_path: Path, ims: ImsEmulator, settings: dict[str, str]
) -> AbstractAsyncContextManager[tuple[GatewayProcess, Stub]]:
    # The calls failing while the key is expired open the backend's circuit: a short reset keeps what
    # is measured the credentials' recovery, not the circuit's.
    return gateway(
        tmp_path,
        MODERATION_BACKEND="tencent",
        IMS_ENDPOINT=ims.url,
        MODERATION_CIRCUIT_RESET=str(CIRCUIT_RESET_SECONDS),
        **settings,
    )


async def answered(stub: Stub) -> bool:
    try:
        await stub.ModerateImage(ModerateImageRequest(content=PNG), timeout=5)
    except grpc.aio.AioRpcError:
        return False
    return True


async def first_answer_after(stub: Stub, start: float, *, within: float) -> float:
    """Seconds from `start` to the first call answered, asking until `within` seconds have passed."""
    await eventually(lambda: answered(stub), within=within - (time.monotonic() - start), every=0.1)
    return time.monotonic() - start


@pytest.mark.parametrize("source", [cvm_role, oidc_role], ids=["cvm_role", "oidc_role"])
async def test_a_trickling_endpoint_is_a_failed_refresh_and_calls_recover_once_it_answers(
    ims: ImsEmulator, tmp_path: Path, source: Source
) -> None:
    name = source.__name__
    # Bounds the test should a load stall for good (what it guards against).
    async with asyncio.timeout(120):
        await stalled_then_healed(ims, tmp_path, source, name)


async def stalled_then_healed(ims: ImsEmulator, tmp_path: Path, source: Source, name: str) -> None:
    with source(ims, tmp_path) as (endpoint, settings):
        async with role_gateway(tmp_path, ims, settings) as (process, stub):
            assert await answered(stub)
            endpoint.trickle_seconds = TRICKLE_SECONDS

            # The key expires while every refresh stalls: calls fail, and each stall is logged.
            async def expired() -> bool:
                return not await answered(stub)

            await eventually(expired, within=LIFETIME + 20, every=0.1)
            await eventually(lambda: process.output.count(STALLED) >= 2, within=LIFETIME + 20, every=0.1)
            healed = time.monotonic()
            endpoint.trickle_seconds = 0.0
            recovered_in = await first_answer_after(stub, healed, within=30)
            metrics = await process.metrics()
    # A refresh stalled when the endpoint healed ends by its deadline; the next comes within a backoff
    # step (the key held has expired), and answers at once; then the circuit lets calls through (3 s of
    # slack for a loaded machine).
    bound = LOAD_DEADLINE_SECONDS + BACKOFF_FLOOR_SECONDS + CIRCUIT_RESET_SECONDS + 3
    assert recovered_in < bound, process.output
    assert metric(metrics, "moderation_credentials_failures_total", name) >= 2
    line = next(line for line in process.output.splitlines() if STALLED in line)
    assert f"refreshing the credentials of backend tencent from the {name} source {STALLED}" in line
    temporary = ims.config.temporary_keys
    assert_no_secret(
        process.output + metrics,
        *temporary,
        *(key.secret_key for key in temporary.values()),
        *(key.token for key in temporary.values()),
        "web-identity-1",
    )
