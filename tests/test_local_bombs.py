"""Image bombs and frame floods against a real `python -m service` on the local backend: each is answered
promptly with a mapped status, within bounded memory, while another caller is still served."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest

from testbed.bombs import frame_flood_gif, pixel_bomb_png, pixel_bomb_webp, tall_second_page_tiff
from testbed.fileserver import serve_files
from testbed.local_images import encode, photo
from testbed.processes import free_port, spawn_service
from tests.support.eventually import eventually_blocking
from tests.support.richstatus import rich_error

Stub = moderation_service_pb2_grpc.ModerationServiceStub
SERVING = health_pb2.HealthCheckResponse.SERVING
ATTACKER, CANARY = "attacker-token-0123456789", "canary-token-0123456789"
MIB = 1024 * 1024


class Service:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.address = f"127.0.0.1:{port}"

    def memory(self, field: str = "VmRSS") -> int:
        """The process's resident memory (VmRSS) or its peak so far (VmHWM), in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field} in /proc")


def _auth(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def _start(tmp: Path, **settings: str) -> Service:
    tokens = tmp / "tokens"
    tokens.write_text(f"attacker {ATTACKER}\ncanary {CANARY}\n")
    port = free_port()
    process = spawn_service(
        port,
        MODERATION_METRICS_LISTEN="off",
        MODERATION_AUTH_TOKENS_FILE=str(tokens),
        MODERATION_FETCH_ALLOW_NETWORKS="127.0.0.0/8",
        **settings,
    )
    service = Service(process, port)
    with grpc.insecure_channel(service.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            try:
                return bool(health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == SERVING)
            except grpc.RpcError:
                assert process.poll() is None, process.communicate()[0]
                return False

        try:
            eventually_blocking(serving, within=60, every=0.1)
        except AssertionError:
            process.kill()
            raise
    return service


def _stop(service: Service, timeout: float = 30) -> tuple[int, str]:
    service.process.send_signal(signal.SIGTERM)
    output, _ = service.process.communicate(timeout=timeout)
    return service.process.returncode, output


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = _start(tmp_path_factory.mktemp("bombs"))
    try:
        yield service
    finally:
        if service.process.poll() is None:
            _stop(service)


async def _canary(channel: grpc.aio.Channel) -> float:
    """Seconds an ordinary call from another caller takes (within its 5 s deadline)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    image = encode(photo("astronaut"), "JPEG")
    await Stub(channel).ModerateImage(ModerateImageRequest(content=image), timeout=5, metadata=_auth(CANARY))
    return loop.time() - started


async def _refusal(channel: grpc.aio.Channel, request: ModerateImageRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await Stub(channel).ModerateImage(request, timeout=10, metadata=_auth(ATTACKER))
    return caught.value


async def test_a_frame_flood_is_answered_promptly_and_another_caller_is_served(service: Service) -> None:
    flood = ModerateImageRequest(content=frame_flood_gif(), interval=1, max_frames=10_000)
    loop = asyncio.get_running_loop()
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = Stub(channel)
        started = loop.time()
        attacks = [
            asyncio.ensure_future(stub.ModerateImage(flood, timeout=10, metadata=_auth(ATTACKER)))
            for _ in range(2)
        ]
        canary = await _canary(channel)
        answers = await asyncio.gather(*attacks)
        elapsed = loop.time() - started
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
    # Five 60x60 frames take well under a second each; all 10,000 took minutes.
    assert all(answer.backend == "local" for answer in answers)
    assert elapsed < 8, elapsed
    assert canary < 5
    assert health.status == SERVING


async def test_a_webp_declaring_9999x8948_is_refused_within_bounded_memory(service: Service) -> None:
    bomb = pixel_bomb_webp()
    baseline = service.memory()
    async with grpc.aio.insecure_channel(service.address) as channel:
        refusals = await asyncio.gather(
            *(_refusal(channel, ModerateImageRequest(content=bomb)) for _ in range(2))
        )
        canary = await _canary(channel)
    for refusal in refusals:
        error = rich_error(refusal)
        assert error.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "decode budget" in error.message
    # Refused from its header: decoding it would take about 1.3 GB.
    assert service.memory("VmHWM") - baseline < 300 * MIB
    assert canary < 5


async def test_a_tiff_whose_second_page_is_12000_square_is_refused_before_that_page(service: Service) -> None:
    request = ModerateImageRequest(content=tall_second_page_tiff(), interval=1, max_frames=2)
    async with grpc.aio.insecure_channel(service.address) as channel:
        error = rich_error(await _refusal(channel, request))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "frame 1 declares 12000x12000; each side must be less than 10000" in error.message
    assert error.bad_request is not None
    assert [v.field for v in error.bad_request.field_violations] == ["content"]


async def test_a_png_bomb_behind_a_url_meets_the_same_limits_as_content(service: Service) -> None:
    with serve_files({"/bomb.png": pixel_bomb_png()}) as base:
        async with grpc.aio.insecure_channel(service.address) as channel:
            error = rich_error(await _refusal(channel, ModerateImageRequest(url=f"{base}/bomb.png")))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "the image is 12000x12000" in error.message
    assert error.bad_request is not None
    assert [v.field for v in error.bad_request.field_violations] == ["url"]


async def test_sigterm_ends_the_process_within_the_grace_while_analysis_is_busy(tmp_path: Path) -> None:
    # A frame cap high enough that analysing the flood would take minutes: only the tokens stop it.
    service = _start(tmp_path, MODERATION_LOCAL_MAX_FRAMES="1000", MODERATION_SHUTDOWN_GRACE="15")
    flood = ModerateImageRequest(content=frame_flood_gif(), interval=1, max_frames=1000)
    async with grpc.aio.insecure_channel(service.address) as channel:
        calls = [
            asyncio.ensure_future(Stub(channel).ModerateImage(flood, timeout=60, metadata=_auth(ATTACKER)))
            for _ in range(2)
        ]
        await asyncio.sleep(2)
        started = time.monotonic()
        returncode, output = await asyncio.to_thread(_stop, service)
        ended = time.monotonic() - started
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert returncode == 0, output
    assert ended < 15 + 3, ended
    assert all(isinstance(outcome, grpc.aio.AioRpcError) for outcome in outcomes)
