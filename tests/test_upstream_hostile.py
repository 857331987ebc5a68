"""Hostile upstreams through the real gateway: an emulator echoing the request headers (the key id and
signature among them), a 200 MB body, JSON nested 100,000 deep, a one-byte-at-a-time drip; and hosts
that idna rejects. Each caller gets its documented status and no secret appears anywhere.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import httpx
import pytest
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from common.scrub import UNRECOGNISED
from emulator import ImsEmulator
from emulator.images import make_png
from service.telemetry import Telemetry, setup_telemetry
from testbed.processes import free_port, spawn_service
from tests.support.gateway import CHANNEL_OPTIONS, SECRET_ID, SECRET_KEY, GatewayFactory, open_channel
from tests.support.richstatus import RichError, rich_error
from tests.support.service_process import wait_serving

Stub = moderation_service_pb2_grpc.ModerationServiceStub
IMAGE = make_png(256, 256)
SECRETS = (SECRET_ID, SECRET_KEY)
IDNA_REJECTED_URLS = ["http://xn--a/i.png", "http://a..b/i.png", f"http://{'a' * 64}.example/i.png"]


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


async def moderate(
    stub: Stub, request: ModerateImageRequest, timeout: float = 10
) -> RichError | ModerateImageResponse:
    try:
        response: ModerateImageResponse = await stub.ModerateImage(request, timeout=timeout)
    except grpc.aio.AioRpcError as error:
        return rich_error(error)
    return response


def failure(outcome: RichError | ModerateImageResponse) -> RichError:
    assert isinstance(outcome, RichError), outcome
    return outcome


def answer_text(outcome: RichError | ModerateImageResponse) -> str:
    if isinstance(outcome, ModerateImageResponse):
        return str(outcome)
    details = [str(outcome.bad_request), str(outcome.quota_failure), *map(str, outcome.error_infos)]
    return "\n".join([outcome.message, *details])


# --- in process: spans and metrics --------------------------------------------------------------


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def telemetry(spans: InMemorySpanExporter, reader: InMemoryMetricReader) -> Telemetry:
    return setup_telemetry({}, span_processors=[SimpleSpanProcessor(spans)], metric_readers=[reader])


def recorded(spans: InMemorySpanExporter, reader: InMemoryMetricReader) -> str:
    """Every span attribute, status and event, and every metric label set, as one text."""
    texts = [
        json.dumps(
            [dict(s.attributes or {}), s.status.description, [dict(e.attributes or {}) for e in s.events]]
        )
        for s in spans.get_finished_spans()
    ]
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                texts.extend(json.dumps(dict(point.attributes or {})) for point in metric.data.data_points)
    return "\n".join(texts)


async def test_an_upstream_echoing_the_request_leaks_nothing(
    make_gateway: GatewayFactory,
    emulator: ImsEmulator,
    telemetry: Telemetry,
    spans: InMemorySpanExporter,
    reader: InMemoryMetricReader,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator.config.hostile = "echo_headers"
    gateway = await make_gateway(telemetry=telemetry)
    async with open_channel(gateway) as channel:
        error = failure(await moderate(Stub(channel), ModerateImageRequest(content=IMAGE)))
        emulator.config.hostile = "echo_headers_result"
        result = await moderate(Stub(channel), ModerateImageRequest(content=IMAGE))
    # FailedOperation.<key id>: classified by its family, shown as no code at all.
    assert (error.code, error.info.reason) == (grpc.StatusCode.INTERNAL, "BACKEND_FAILED")
    assert error.info.metadata["upstream_code"] == UNRECOGNISED
    assert error.info.metadata["upstream_request_id"] == UNRECOGNISED
    assert "Credential" not in error.message
    assert isinstance(result, ModerateImageResponse)
    assert result.label == UNRECOGNISED
    assert_no_secret(answer_text(error), answer_text(result), recorded(spans, reader), caplog.text)
    assert f'"moderation.label": "{UNRECOGNISED}"' in recorded(spans, reader)


async def test_an_unreadable_answer_is_retried_and_unavailable(
    make_gateway: GatewayFactory,
    emulator: ImsEmulator,
    telemetry: Telemetry,
    spans: InMemorySpanExporter,
    reader: InMemoryMetricReader,
) -> None:
    gateway = await make_gateway(telemetry=telemetry, max_attempts=2)
    async with open_channel(gateway) as channel:
        for mode in ("deep_json", "huge_body"):
            emulator.config.hostile = mode
            emulator.reset_stats()
            error = failure(await moderate(Stub(channel), ModerateImageRequest(content=IMAGE)))
            assert (error.code, error.info.reason) == (grpc.StatusCode.UNAVAILABLE, "BACKEND_UNAVAILABLE"), (
                mode
            )
            assert error.info.metadata["upstream_code"] == "MalformedResponse"
            assert error.info.metadata["attempts"] == "2"
            assert emulator.stats.billed == 2
    assert '"moderation.retry_reason": "MalformedResponse"' in recorded(spans, reader)


async def test_a_slow_drip_is_cut_at_the_callers_deadline(
    make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    emulator.config.hostile = "slow_drip"
    emulator.config.drip_interval = 0.05
    gateway = await make_gateway()
    async with open_channel(gateway) as channel:
        # The whole answer would take len(body) * 50 ms, i.e. many seconds.
        assert await dripped_call_seconds(Stub(channel)) < 1.5


async def dripped_call_seconds(stub: Stub) -> float:
    """How long a call with a 1 s deadline took; the gateway or the client may be first to end it."""
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ModerateImage(ModerateImageRequest(content=IMAGE), timeout=1.0)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    return time.monotonic() - started


@pytest.mark.parametrize("url", IDNA_REJECTED_URLS)
async def test_hosts_idna_rejects_are_invalid_urls(make_gateway: GatewayFactory, url: str) -> None:
    gateway = await make_gateway()
    async with open_channel(gateway) as channel:
        error = failure(await moderate(Stub(channel), ModerateImageRequest(url=url)))
    assert (error.code, error.info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_URL")
    assert error.bad_request is not None
    assert [v.field for v in error.bad_request.field_violations] == ["url"]


async def test_a_4_kb_url_still_gets_its_error_info(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway()
    async with open_channel(gateway) as channel:
        # 4096 characters, the longest URL accepted; the host is invalid, so it is quoted nowhere.
        url = "http://a..b/" + "%" * (4096 - len("http://a..b/"))
        error = failure(await moderate(Stub(channel), ModerateImageRequest(url=url, data_id="é" * 3000)))
    assert error.info.reason == "INVALID_URL"
    assert len(error.message) < 1000


# --- a real gateway process ---------------------------------------------------------------------


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.system
async def test_a_gateway_process_against_every_hostile_mode(emulator: ImsEmulator) -> None:
    port, metrics_port = free_port(), free_port()
    service = spawn_service(
        port,
        TENCENTCLOUD_SECRET_ID=SECRET_ID,
        TENCENTCLOUD_SECRET_KEY=SECRET_KEY,
        IMS_ENDPOINT=emulator.url,
        MODERATION_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
        MODERATION_MAX_ATTEMPTS="2",
    )
    answers: list[str] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
            await wait_serving(channel)
            stub = Stub(channel)
            assert isinstance(
                await moderate(stub, ModerateImageRequest(content=IMAGE)), ModerateImageResponse
            )
            baseline = peak_rss_mib(service.pid)
            expected = {
                "echo_headers": (grpc.StatusCode.INTERNAL, "BACKEND_FAILED"),
                "huge_body": (grpc.StatusCode.UNAVAILABLE, "BACKEND_UNAVAILABLE"),
                "deep_json": (grpc.StatusCode.UNAVAILABLE, "BACKEND_UNAVAILABLE"),
            }
            for mode, (code, reason) in expected.items():
                emulator.config.hostile = mode
                error = failure(await moderate(stub, ModerateImageRequest(content=IMAGE), timeout=30))
                assert (error.code, error.info.reason) == (code, reason), mode
                answers.append(answer_text(error))
            # Two attempts at a 200 MB body: the cap stopped both at 1 MiB each.
            peak = peak_rss_mib(service.pid)
            emulator.config.hostile = "echo_headers_result"
            outcome = await moderate(stub, ModerateImageRequest(content=IMAGE))
            assert isinstance(outcome, ModerateImageResponse)
            answers.append(answer_text(outcome))
            emulator.config.hostile = "slow_drip"
            assert await dripped_call_seconds(stub) < 1.5
            for url in IDNA_REJECTED_URLS:
                error = failure(await moderate(stub, ModerateImageRequest(url=url)))
                assert error.info.reason == "INVALID_URL"
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    finally:
        emulator.config.hostile = ""
        service.terminate()
        logs, _ = service.communicate(timeout=30)
    assert peak - baseline < 64, (baseline, peak)
    assert f'moderation_label="{UNRECOGNISED}"' in metrics
    assert 'moderation_retry_reason="MalformedResponse"' in metrics
    assert_no_secret(*answers, metrics, logs)
    assert "Credential=" not in metrics
