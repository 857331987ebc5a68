"""A caller past its hard quota spends none of the rate budget (issue 29), through real processes: a
gateway in front of the IMS emulator, one caller refused by its quota while another streams. The quota
unit is reserved before the rate slot, so the refused calls take no slot: the governor's grants (its
`/metrics`) and IMS's billed calls both count only the calls that were sent."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from emulator import EmulatorConfig, ImsEmulator
from emulator.images import make_png
from testbed.client import open_channel, stub
from testbed.processes import free_port
from testbed.stream import run_stream
from tests.support.gateway import SECRET_ID, SECRET_KEY
from tests.support.quota_replicas import bearer, moderate, replicas, write_config
from tests.support.richstatus import rich_error

# A small budget, so that slots spent on refused calls would show in the stream's pace too.
BUDGET = 10
QUOTA = 4
STREAMED = 30
REFUSED = 40


@pytest.fixture
def ims() -> Iterator[ImsEmulator]:
    config = EmulatorConfig(secret_id=SECRET_ID, secret_key=SECRET_KEY, latency=0.05, qps_limit=BUDGET)
    with ImsEmulator(config, host="127.0.0.1", port=0) as emulator:
        yield emulator


def governor_grants(metrics: str) -> int:
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in metrics.splitlines()
        if re.match(r"moderation_governor_grants_total\{", line)
    )


async def test_calls_refused_by_a_hard_quota_take_no_rate_slot_while_another_caller_streams(
    ims: ImsEmulator, tmp_path: Path
) -> None:
    config = write_config(tmp_path, ims, f'[quotas.uploads]\nper_day = {QUOTA}\nmode = "hard"\n', qps=BUDGET)
    metrics_port = free_port()
    async with replicas(tmp_path, 1, **config, MODERATION_METRICS_LISTEN=f"127.0.0.1:{metrics_port}") as (
        address,
    ):
        assert [await moderate(address, "uploads") for _ in range(QUOTA)] == [None] * QUOTA
        images = [make_png(64, 64, f"item-{n}") for n in range(STREAMED)]
        async with open_channel(address) as channel:
            streamed, *refused = await asyncio.gather(
                run_stream(stub(channel), images, STREAMED, metadata=bearer("others")),
                *(moderate(address, "uploads") for _ in range(REFUSED)),
            )
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)).text
    assert (streamed.results, streamed.call_error) == (STREAMED, None)
    for error in refused:
        assert isinstance(error, grpc.aio.AioRpcError)
        assert rich_error(error).info.reason == "CALLER_QUOTA_EXHAUSTED"
    # Every slot granted went to a call that was sent: none to the 40 refused ones.
    assert ims.stats.billed == QUOTA + STREAMED
    assert governor_grants(metrics) == QUOTA + STREAMED
