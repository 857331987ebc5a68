"""The embedded backend behind the real gateway: the default on a fresh machine."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import (
    ModerateImageRequest,
    ModerateImageResponse,
    StreamModerateImagesRequest,
    Suggestion,
)

from backends.base import Backend, WrappedBackend
from backends.local.settings import LocalSettings
from service.factory import build_backend
from service.server import Gateway, build_server
from testbed.fileserver import serve_files
from testbed.local_images import encode, photo, qr_image, text_image
from testbed.processes import spawn_service
from tests.support.gateway import open_channel, single_backend_settings
from tests.support.richstatus import rich_error
from tests.support.service_process import wait_serving

Stub = moderation_service_pb2_grpc.ModerationServiceStub
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.fixture
async def local_gateway() -> AsyncIterator[Gateway]:
    settings = single_backend_settings("local", LocalSettings(fetch_allow_networks=LOOPBACK))
    gateway = build_server(settings, build_backend(settings))
    await gateway.start()
    yield gateway
    await gateway.stop()


@pytest.fixture
def image_server() -> Iterator[str]:
    with serve_files({"/qr.png": encode(qr_image("https://promo.example/"), "PNG")}) as url:
        yield f"{url}/qr.png"


async def test_bytes_and_urls(local_gateway: Gateway, image_server: str) -> None:
    async with open_channel(local_gateway) as channel:
        stub = Stub(channel)
        clean = await stub.ModerateImage(ModerateImageRequest(content=encode(photo("astronaut"), "JPEG")))
        assert (clean.suggestion, clean.backend, clean.attempts) == (Suggestion.SUGGESTION_PASS, "local", 1)
        by_url = await stub.ModerateImage(ModerateImageRequest(url=image_server))
        assert (by_url.suggestion, by_url.sub_label) == (Suggestion.SUGGESTION_BLOCK, "QrCode")


async def test_corrupt_image_is_invalid_argument(local_gateway: Gateway) -> None:
    truncated = encode(photo("astronaut"), "JPEG")[:3000]
    async with open_channel(local_gateway) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await Stub(channel).ModerateImage(ModerateImageRequest(content=truncated))
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.bad_request is not None


async def test_private_urls_are_refused_by_default(local_gateway: Gateway) -> None:
    async with open_channel(local_gateway) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await Stub(channel).ModerateImage(
                ModerateImageRequest(url="http://169.254.169.254/latest/meta-data")
            )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_large_batch_does_not_block_health_checks(local_gateway: Gateway) -> None:
    images = [encode(text_image([f"line {i} of some text"]), "PNG") for i in range(24)]
    requests = [
        StreamModerateImagesRequest(correlation_id=str(i), request=ModerateImageRequest(content=c))
        for i, c in enumerate(images)
    ]
    async with open_channel(local_gateway) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        batch = asyncio.ensure_future(_drain(Stub(channel).StreamModerateImages(iter(requests))))
        slowest = 0.0
        loop = asyncio.get_running_loop()
        while not batch.done():
            started = loop.time()
            status = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            slowest = max(slowest, loop.time() - started)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            await asyncio.sleep(0.05)
        assert len(await batch) == 24
    # Analysis runs off the event loop: were it on it, a check would wait seconds behind the OCR.
    assert slowest < 1.0


async def _drain(call: AsyncIterator[object]) -> list[object]:
    return [answer async for answer in call]


@pytest.mark.system
async def test_make_run_without_credentials_serves_the_local_backend() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = spawn_service(port, MODERATION_METRICS_LISTEN="off")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await wait_serving(channel, within=30)
            result = await Stub(channel).ModerateImage(
                ModerateImageRequest(content=encode(text_image(["加微信 free money"]), "PNG")), timeout=30
            )
        assert result.backend == "local"
        assert "free money" in result.ocr_results[0].text
    finally:
        process.terminate()
        output, _ = await asyncio.to_thread(process.communicate, timeout=30)
    assert process.returncode == 0, output


class InFlight(WrappedBackend):
    """The local backend, counting the calls it has been given and not yet answered."""

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        self.now = self.peak = 0

    async def moderate(self, request: ModerateImageRequest, *, timeout: float) -> ModerateImageResponse:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            return await super().moderate(request, timeout=timeout)
        finally:
            self.now -= 1


async def test_a_long_stream_reads_no_further_ahead_than_the_workers_can_serve() -> None:
    # Each item's time budget starts when it is read, and every item read goes straight to the backend:
    # reading 128 ahead of two workers would let the last ones wait out their budget in the pool (and
    # open the circuit for everyone). The backend itself counts what the stream gave it at once, so the
    # bound is checked however slow a loaded machine makes each image; the budget is generous for that.
    settings = single_backend_settings("local", LocalSettings(workers=2), backend_timeout=60.0)
    backend = InFlight(build_backend(settings))
    gateway = build_server(settings, backend)
    await gateway.start()
    image = encode(text_image(["a line of text to read"]), "PNG")
    requests = [
        StreamModerateImagesRequest(correlation_id=str(i), request=ModerateImageRequest(content=image))
        for i in range(40)
    ]
    try:
        async with open_channel(gateway) as channel:
            answers = await _drain(Stub(channel).StreamModerateImages(iter(requests)))
    finally:
        await gateway.stop()
    assert len(answers) == 40
    assert all(a.WhichOneof("outcome") == "result" for a in answers)  # type: ignore[attr-defined]
    # One item working and one queued per worker, and the stream did read that far ahead.
    assert backend.peak == backend.concurrency == 4
