"""The `caller` metric label is bounded (MODERATION_METRICS_MAX_CALLERS): a real gateway process,
callers named by a token file, `/metrics` scraped over HTTP."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from moderation.v1.moderation_service_pb2 import ModerateImageRequest

from emulator import ImsEmulator
from emulator.images import make_png
from testbed.client import open_channel, stub
from testbed.processes import free_port
from tests.support.service_process import start_service, stop_gateway, wait_serving

CALLERS = {f"caller{n}": f"token-{n}-0123456789abcdef" for n in range(4)}
IMAGE = make_png(64, 64, "IMSEMU:Pass:Normal::1")


def caller_labels(metrics: str, name: str) -> set[str]:
    return {
        match.group(1)
        for line in metrics.splitlines()
        if line.startswith(name)
        for match in [re.search(r'caller="([^"]*)"', line)]
        if match
    }


async def test_callers_past_the_configured_number_are_counted_as_other(
    emulator: ImsEmulator, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("".join(f"{name} {token}\n" for name, token in CALLERS.items()))
    port, metrics_port = free_port(), free_port()
    process = start_service(
        emulator,
        port,
        MODERATION_AUTH_TOKENS_FILE=str(tokens),
        MODERATION_METRICS_MAX_CALLERS="2",
        MODERATION_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
    )
    try:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            await wait_serving(channel)
            for token in CALLERS.values():
                await stub(channel).ModerateImage(
                    ModerateImageRequest(content=IMAGE), metadata=(("authorization", f"Bearer {token}"),)
                )
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)).text
    finally:
        await stop_gateway(process)
    assert caller_labels(metrics, "moderation_requests_total") == {"caller0", "caller1", "other"}
    assert caller_labels(metrics, "moderation_billed_calls_total") == {"caller0", "caller1", "other"}
    assert emulator.stats.billed == len(CALLERS)
