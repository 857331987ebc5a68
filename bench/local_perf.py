"""The local backend's performance through the gateway (`python -m service`, MODERATION_BACKEND=local)
against a raw loop over the same models (`bench.local_raw`): images/s, unary latency by image size,
memory.

Both run at once, as subprocesses with the models loaded, and take turns on the same images in
chunks (raw, gateway, gateway, raw, ...): on a shared machine whatever else runs meanwhile then
weighs on both alike, which one long run each, a minute apart, does not ensure.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_status import rpc_status
from moderation.v1 import moderation_service_pb2_grpc

from bench.latency import CALL_TIMEOUT, LatencySample, sample_unary
from bench.local_cases import CaseMaker, KeywordFinder, photographs, write_keyword_policy
from bench.local_raw import READY
from bench.sections import Progress
from testbed import processes
from testbed.client import error_label, open_channel, request, stub
from testbed.local_images import encode, photo
from testbed.processes import Running, Worker
from testbed.stream import StreamResult, run_stream

# The gateway's default MODERATION_LOCAL_WORKERS (backends/local/settings.py): the raw loop's pool.
WORKERS = 2
# Distinct images the throughput workload cycles through.
DISTINCT_IMAGES = 16
# Images (calls, for the gateway) before timing: first calls pay for lazy initialisation.
WARM_UP = 4
# Items the gateway's stream keeps in flight: enough that a worker never waits for the next image,
# few enough that none waits in the gateway's queue anywhere near the 15 s backend timeout.
CLIENT_WINDOW = 4 * WORKERS
LATENCY_PHOTO = "coffee"
SMALL, LARGE = (640, 480), (2000, 1500)
# Only a hung raw loop takes this long for one chunk.
CHUNK_TIMEOUT = 300.0


@dataclass(frozen=True)
class PerfSizes:
    stream_images: int
    # The throughput images are measured in this many turns each.
    chunks: int
    latency_calls: int


@dataclass
class Throughput:
    images: int = 0
    seconds: float = 0.0
    # CPU time of the process (all its threads) meanwhile.
    cpu_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def cores(self) -> float:
        return self.cpu_seconds / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_image(self) -> float:
        return self.cpu_seconds / self.images if self.images else 0.0


@dataclass
class PerfResult:
    gateway: Throughput = field(default_factory=Throughput)
    raw: Throughput = field(default_factory=Throughput)
    # Every chunk's stream, for its errors.
    streams: list[StreamResult] = field(default_factory=list)
    small: LatencySample = field(default_factory=LatencySample)
    large: LatencySample = field(default_factory=LatencySample)
    # VmRSS once the models are loaded (the gateway's health says SERVING, the raw loop is ready);
    # VmHWM after the throughput chunks.
    gateway_loaded_rss: int = 0
    gateway_peak_rss: int = 0
    raw_loaded_rss: int = 0
    raw_peak_rss: int = 0
    # The whole workload as one stream without a client window, as `moderate FOLDER` sends it: the
    # gateway reads up to 128 items ahead, each waiting its turn for the workers within the backend
    # timeout.
    backlog: StreamResult = field(default_factory=StreamResult)
    # How a unary call right after it ended: `OK`, or `CODE/REASON`.
    after_backlog: str = ""


async def measure_perf(seed: int, sizes: PerfSizes, progress: Progress) -> PerfResult:
    with tempfile.TemporaryDirectory(prefix="bench-local-perf-") as folder:
        root = Path(folder)
        policy, images_dir = write_keyword_policy(root / "policy"), root / "images"
        images_dir.mkdir()
        maker = CaseMaker(seed, photographs(), KeywordFinder(policy))
        images = maker.mixed_images(DISTINCT_IMAGES)
        for index, image in enumerate(images):
            (images_dir / f"{index:03d}").write_bytes(image)
        progress("local: starting the gateway and the raw loop, both loading the models")
        with (
            processes.serve(MODERATION_BACKEND="local", MODERATION_POLICY_FILE=str(policy)) as gateway,
            processes.worker(
                ["bench.local_raw", str(images_dir), str(policy), "--workers", str(WORKERS)], READY
            ) as raw,
        ):
            result = PerfResult(
                gateway_loaded_rss=gateway.status_bytes("VmRSS"), raw_loaded_rss=raw.status_bytes("VmRSS")
            )
            async with open_channel(gateway.address) as channel:
                moderation = stub(channel)
                await _throughput(result, gateway, moderation, raw, images, sizes, progress)
                progress(f"local: unary latency, {sizes.latency_calls} calls per size")
                result.small = await _latency(moderation, SMALL, sizes.latency_calls)
                result.large = await _latency(moderation, LARGE, sizes.latency_calls)
                # Last: its timeouts may open the backend's circuit, failing every call for a while.
                progress(
                    f"local: gateway, one stream of {sizes.stream_images} images without a client window"
                )
                result.backlog = await run_stream(moderation, images, sizes.stream_images)
                result.after_backlog = await _unary_outcome(moderation, images[0])
    return result


async def _throughput(
    result: PerfResult,
    gateway: Running,
    moderation: moderation_service_pb2_grpc.ModerationServiceStub,
    raw: Worker,
    images: list[bytes],
    sizes: PerfSizes,
    progress: Progress,
) -> None:
    chunk = sizes.stream_images // sizes.chunks
    progress(
        f"local: throughput, {sizes.chunks} turns each of {chunk} images: the raw loop on {WORKERS} threads, "
        f"the gateway one stream with {CLIENT_WINDOW} in flight"
    )
    await asyncio.to_thread(raw.ask, str(WARM_UP), CHUNK_TIMEOUT)
    for index, image in enumerate(images[:WARM_UP]):
        await moderation.ModerateImage(request(image, f"warm-{index}"), timeout=CALL_TIMEOUT)
    for turn in range(sizes.chunks):
        # raw, gateway, gateway, raw, ...: a drift over the turns weighs on both alike.
        for which in ("raw", "gateway") if turn % 2 == 0 else ("gateway", "raw"):
            process = raw if which == "raw" else gateway
            cpu, started = process.cpu_seconds(), time.perf_counter()
            if which == "raw":
                answered = int(await asyncio.to_thread(raw.ask, str(chunk), CHUNK_TIMEOUT))
                totals = result.raw
            else:
                stream = await run_stream(moderation, images, chunk, window=CLIENT_WINDOW)
                result.streams.append(stream)
                answered, totals = stream.results, result.gateway
            totals.images += answered
            totals.seconds += time.perf_counter() - started
            totals.cpu_seconds += process.cpu_seconds() - cpu
    result.gateway_peak_rss = gateway.status_bytes("VmHWM")
    result.raw_peak_rss = raw.status_bytes("VmHWM")


async def _latency(
    moderation: moderation_service_pb2_grpc.ModerationServiceStub, size: tuple[int, int], calls: int
) -> LatencySample:
    image = encode(photo(LATENCY_PHOTO).resize(size), "JPEG", quality=90)
    # The first call of a size pays for buffers of that size.
    await sample_unary(moderation, image, 1, prefix="warm")
    return await sample_unary(moderation, image, calls, prefix=f"{size[0]}x{size[1]}")


async def _unary_outcome(moderation: moderation_service_pb2_grpc.ModerationServiceStub, image: bytes) -> str:
    try:
        await moderation.ModerateImage(request(image, "after-backlog"), timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as error:
        status = rpc_status.from_call(error)
        return error_label(status) if status is not None else error.code().name
    return "OK"
