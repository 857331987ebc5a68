"""A key rotated in after start leaves no channel: answers, spans, metrics and log lines all pass the one
outward scrubber, which the rotation feeds.

A real gateway process (`python -m service`) signs with key files; the files change to a new pair and the
emulator, which knows both, is then made hostile (it echoes the request's headers, the new key id among
them, into codes, messages, labels and request ids), and a caller quotes the new key id in `biz_type`
and `data_id`, which only the outward scrubber sees. Spans go to a real OTLP receiver, metrics are
scraped from /metrics, the log is the process's own output.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from moderation.v1.moderation_service_pb2 import ModerateImageRequest
from moderation.v1.moderation_service_pb2_grpc import ModerationServiceStub

from emulator import EmulatorConfig, ImsEmulator
from emulator.images import make_png
from testbed.processes import free_port, spawn_module
from tests.support.otlp import TraceReceiver, trace_receiver
from tests.support.service_process import wait_serving

OLD_ID, OLD_KEY = "AKIDrotold" + "e5" * 8, "rot-old-key-" + "f6" * 8
NEW_ID, NEW_KEY = "AKIDrotnew" + "a7" * 8, "rot-new-key-" + "b8" * 8
IMAGE = make_png(128, 128)


@pytest.fixture
def ims() -> Iterator[ImsEmulator]:
    config = EmulatorConfig(secret_id=OLD_ID, secret_key=OLD_KEY, keys={NEW_ID: NEW_KEY})
    with ImsEmulator(config, host="127.0.0.1", port=0) as emulator:
        yield emulator


def write_pair(root: Path, secret_id: str, secret_key: str) -> None:
    """Each file replaced whole, as an operator's tooling would (a pair caught between the two writes is
    read again by the gateway)."""
    for name, value in (("secret_id", secret_id), ("secret_key", secret_key)):
        staged = root / f".{name}.new"
        staged.write_text(value + "\n")
        os.replace(staged, root / name)


async def calls_quoting_the_new_key(stub: ModerationServiceStub, ims: ImsEmulator) -> list[str]:
    """What callers were told, as text: a result and failures carrying the echoed headers."""
    shown = []
    quoting = ModerateImageRequest(content=IMAGE, biz_type=NEW_ID, data_id=NEW_ID)
    shown.append(str(await stub.ModerateImage(quoting)))
    for mode in ("echo_headers_result", "echo_headers"):
        ims.config.hostile = mode
        try:
            shown.append(str(await stub.ModerateImage(quoting)))
        except grpc.aio.AioRpcError as refused:
            shown.append(f"{refused.details()} {refused.trailing_metadata()}")
    return shown


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[TraceReceiver, str]]:
    async with trace_receiver() as started:
        yield started


async def test_a_rotated_key_leaves_no_answer_span_metric_or_log_line(
    ims: ImsEmulator, receiver: tuple[TraceReceiver, str], tmp_path: Path
) -> None:
    collector, otlp_endpoint = receiver
    write_pair(tmp_path, OLD_ID, OLD_KEY)
    port, metrics_port = free_port(), free_port()
    with tempfile.TemporaryFile("w+") as output:
        process = spawn_module(
            "service",
            port,
            {
                "TENCENTCLOUD_SECRET_ID_FILE": str(tmp_path / "secret_id"),
                "TENCENTCLOUD_SECRET_KEY_FILE": str(tmp_path / "secret_key"),
                "IMS_ENDPOINT": ims.url,
                "MODERATION_FETCH": "backend",
                "MODERATION_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
                "MODERATION_LOG_LEVEL": "DEBUG",
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "50",
            },
            output,
        )
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await wait_serving(channel)
                stub = ModerationServiceStub(channel)
                await stub.ModerateImage(ModerateImageRequest(content=IMAGE))
                write_pair(tmp_path, NEW_ID, NEW_KEY)
                async with asyncio.timeout(10):
                    while NEW_ID not in ims.stats.authenticated:
                        await stub.ModerateImage(ModerateImageRequest(content=IMAGE))
                answers = await calls_quoting_the_new_key(stub, ims)
            async with httpx.AsyncClient() as client:
                metrics = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(process.wait, 60)
        output.seek(0)
        log = output.read()
    async with asyncio.timeout(10):
        await collector.received.wait()
    spans = b"".join(collector.exports)

    # Every channel was used: the new key signed, the hostile answers and the caller's quotes arrived.
    assert ims.stats.authenticated.get(NEW_ID, 0) >= 3
    assert len(answers) == 3
    assert b"moderation.biz_type" in spans
    assert "moderation_requests_total" in metrics
    assert any(json.loads(line).get("logger") == "moderation.access" for line in log.splitlines())
    assert process.returncode == 0
    for channel_text in (*answers, metrics, log, spans.decode("utf-8", "replace")):
        assert NEW_ID not in channel_text
        assert NEW_KEY not in channel_text
    # The caller's quotes of the key reach no backend's scrubber: the outward one learned the key.
    assert "[REDACTED]" in log
    assert b"[REDACTED]" in spans
