"""What a call costs the gateway, against the floor: CPU per call read from /proc for the gateway
process alone (neither the emulator's nor the client's CPU counts), the peak RSS of a stream of 5 MB
images, and a stream item against a unary call.

All targets run for the whole measurement and take turns, window by window, so a noisy machine's drift
falls on all alike: a bare grpc.aio echo server receiving the same messages, the same server making one
IMS-shaped HTTP exchange per call (what no IMS gateway on grpc.aio and aiohttp can do without), and three
gateways on the
tencent backend against one emulator with no latency and no rate limit (IMS_QPS high enough never to
wait): tracing off, every call traced (OTLP/gRPC to a loopback receiver), and 1 trace in 10.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
from collections.abc import Awaitable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from moderation.v1 import moderation_service_pb2_grpc

from bench.memory import MemoryResult, large_image, peak_rss
from bench.otlp_receiver import otlp_receiver
from bench.sections import Progress
from bench.telemetry_overhead import UNLIMITED_QPS, closed_loop
from emulator.images import make_jpeg
from testbed import processes
from testbed.client import open_channel, stub
from testbed.processes import Credentials, Running
from testbed.stream import run_stream

ECHO, OFF, ON, SAMPLED = "echo", "off", "on", "sampled"
# The echo server plus one IMS-shaped HTTP exchange per call (`bench.echo_server --forward`).
EXCHANGE = "exchange"
# The untraced gateway's StreamModerateImages, per item.
STREAM = "stream"
SAMPLED_RATIO = 0.1
IMAGE_SIZES = {"17 KiB": 17 * 1024, "900 KiB": 900 * 1024, "5 MB": 5_000_000}
SMALL = "17 KiB"
# The gateway's default stream byte window (MODERATION_STREAM_MAX_IN_FLIGHT_BYTES).
WINDOW_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class EfficiencySizes:
    # Rounds: every target measured once per round; figures are the medians over the rounds.
    rounds: int
    window: float
    warm_up: float
    # Unary calls in flight, by image size (fewer for large images: 5 MB each).
    concurrency: dict[str, int]
    stream_items: int
    memory_items: int


FULL = EfficiencySizes(3, 3.0, 1.0, {"17 KiB": 16, "900 KiB": 8, "5 MB": 4}, 2000, 60)
QUICK = EfficiencySizes(3, 1.0, 0.5, {"17 KiB": 16, "900 KiB": 8, "5 MB": 4}, 500, 30)


@dataclass
class EfficiencyResult:
    # Seconds of the target's CPU per call, one per round, by (target, image size); STREAM per item.
    cpu: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    calls: dict[tuple[str, str], int] = field(default_factory=dict)
    failures: int = 0
    memory: MemoryResult | None = None
    window_bytes: int = 0

    def add(self, target: str, size: str, cpu_seconds: float, calls: int, failures: int) -> None:
        """One window's measurement of `target` at `size`."""
        self.cpu.setdefault((target, size), []).append(cpu_seconds / max(calls, 1))
        self.calls[(target, size)] = self.calls.get((target, size), 0) + calls
        self.failures += failures

    def cpu_per_call(self, target: str, size: str = SMALL) -> float:
        samples = self.cpu.get((target, size), [])
        return statistics.median(samples) if samples else math.nan

    def over_echo(self, size: str, target: str = OFF) -> float:
        return self.cpu_per_call(target, size) / self.cpu_per_call(ECHO, size)

    def traced_share(self, mode: str) -> float:
        """What a CPU-bound gateway serves traced, as a share of what it serves untraced."""
        return self.cpu_per_call(OFF) / self.cpu_per_call(mode)

    @property
    def rss_growth(self) -> float:
        return math.nan if self.memory is None else self.memory.peak_rss - self.memory.idle_rss


def jpeg_of(size: int, seed: int) -> bytes:
    """A JPEG of exactly `size` bytes: a real 640x480 image, then random bytes after its end marker
    (decoders stop there; gRPC, base64 and hashing see every byte)."""
    head = make_jpeg(640, 480)
    return head + random.Random(seed).randbytes(size - len(head))


@contextmanager
def echo_server(forward: str | None = None) -> Iterator[Running]:
    """The bare echo server; with `forward`, one exchange with that URL per call."""
    port = processes.free_port()
    command = ["bench.echo_server", str(port), *(["--forward", forward] if forward else [])]
    with processes.worker(command, "serving") as echo:
        yield Running(echo.process, f"127.0.0.1:{port}", echo.log)


def _traced(endpoint: str) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
    }


async def measure_efficiency(sizes: EfficiencySizes, number: int, progress: Progress) -> EfficiencyResult:
    result = EfficiencyResult()
    images = {name: jpeg_of(size, number) for name, size in IMAGE_SIZES.items()}
    credentials = Credentials.fresh()
    with ExitStack() as stack:
        emulator = stack.enter_context(processes.emulator(credentials, latency=0.0, qps=None))
        endpoint, _ = stack.enter_context(otlp_receiver())
        sampled_endpoint, _ = stack.enter_context(otlp_receiver())
        unlimited = {"IMS_QPS": UNLIMITED_QPS}
        targets = {
            ECHO: stack.enter_context(echo_server()),
            EXCHANGE: stack.enter_context(echo_server(forward=emulator.address)),
            OFF: stack.enter_context(
                processes.gateway(credentials, emulator.address, **unlimited, OTEL_TRACES_EXPORTER="none")
            ),
            ON: stack.enter_context(
                processes.gateway(credentials, emulator.address, **unlimited, **_traced(endpoint))
            ),
            SAMPLED: stack.enter_context(
                processes.gateway(
                    credentials,
                    emulator.address,
                    **unlimited,
                    **_traced(sampled_endpoint),
                    OTEL_TRACES_SAMPLER="parentbased_traceidratio",
                    OTEL_TRACES_SAMPLER_ARG=str(SAMPLED_RATIO),
                )
            ),
        }
        async with TargetStubs(targets) as stubs:
            for name in targets:
                progress(f"efficiency: warm-up of {name}")
                await closed_loop(stubs[name], images[SMALL], sizes.concurrency[SMALL], sizes.warm_up)
            for round_number in range(1, sizes.rounds + 1):
                progress(f"efficiency: round {round_number} of {sizes.rounds}")
                plan = [(t, s) for s in IMAGE_SIZES for t in (ECHO, EXCHANGE, OFF)] + [
                    (ON, SMALL),
                    (SAMPLED, SMALL),
                ]
                for target, size in plan if round_number % 2 else reversed(plan):
                    load = unary_load(stubs[target], images[size], sizes.concurrency[size], sizes.window)
                    await measure_window(result, target, size, targets[target], load)
                streamed = _stream(stubs[OFF], images[SMALL], sizes.stream_items)
                await measure_window(result, STREAM, SMALL, targets[OFF], streamed)
    progress(f"efficiency: peak RSS, {sizes.memory_items} images of 5 MB in one stream")
    with processes.emulator(credentials) as emulator:
        result.memory = await peak_rss(emulator.address, credentials, large_image(), sizes.memory_items)
    result.window_bytes = WINDOW_BYTES
    return result


class TargetStubs:
    """One channel per target, open for the whole measurement."""

    def __init__(self, targets: dict[str, Running]) -> None:
        self._channels = {name: open_channel(target.address) for name, target in targets.items()}

    async def __aenter__(self) -> dict[str, moderation_service_pb2_grpc.ModerationServiceStub]:
        return {name: stub(channel) for name, channel in self._channels.items()}

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))


async def measure_window(
    result: EfficiencyResult, target: str, size: str, running: Running, load: Awaitable[tuple[int, int]]
) -> None:
    """`load` (calls answered, calls failed) measured against the CPU `running` spent meanwhile."""
    before = running.cpu_seconds()
    calls, failures = await load
    result.add(target, size, running.cpu_seconds() - before, calls, failures)


async def unary_load(
    moderation: moderation_service_pb2_grpc.ModerationServiceStub,
    image: bytes,
    concurrency: int,
    seconds: float,
) -> tuple[int, int]:
    calls, failures, _ = await closed_loop(moderation, image, concurrency, seconds)
    return calls, failures


async def _stream(
    moderation: moderation_service_pb2_grpc.ModerationServiceStub, image: bytes, items: int
) -> tuple[int, int]:
    stream = await run_stream(moderation, [image], items)
    return stream.results, stream.sent - stream.results
