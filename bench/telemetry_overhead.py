"""Unary throughput with tracing and metrics on against off, in one run.

Three gateways on the tencent backend share one emulator (no latency, no rate limit; IMS_QPS high
enough that the governor never waits), so the gateway's own work is what is measured: one with
tracing off and no metrics endpoint, one exporting every span over OTLP/gRPC to a loopback receiver
and serving /metrics, scraped once during the run, and one like it but sampling 1 trace in 10 at the
head (what a busy production deployment would run), exporting to a receiver of its own. All run for
the whole measurement and take turns: warm-up windows, then off, on, sampled, sampled, on, off...
windows at a fixed number of calls in flight, so a noisy machine's drift falls on all alike. The idle
ones only wait on their sockets meanwhile.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass

import grpc
import httpx
from moderation.v1 import moderation_service_pb2_grpc

from bench.latency import CALL_TIMEOUT
from bench.otlp_receiver import otlp_receiver
from bench.sections import Progress
from emulator.images import make_png
from testbed import processes
from testbed.client import open_channel, request, stub
from testbed.processes import Credentials, Running

OFF, ON, SAMPLED = "off", "on", "sampled"
SAMPLED_RATIO = 0.1
# Far above what two cores can serve: the rate governor never makes a call wait.
UNLIMITED_QPS = "100000"
REQUESTS_METRIC = "moderation_requests_total"


@dataclass(frozen=True)
class TelemetrySizes:
    concurrency: int
    # Seconds of load on each gateway before measuring, and per measured window.
    warm_up: float
    window: float
    # Rounds of one window per gateway.
    rounds: int


@dataclass(frozen=True)
class Window:
    mode: str
    calls: int
    failures: int
    seconds: float
    # CPU time used meanwhile by the gateway under load, the emulator, and this process (the client and
    # the receiver): on two cores they compete, which the throughput alone does not show.
    gateway_cpu: float
    emulator_cpu: float
    bench_cpu: float


@dataclass(frozen=True)
class TelemetryResult:
    windows: list[Window]
    # Every call the traced gateway answered, warm-up included: what its spans are counted against.
    traced_calls: int
    spans: Counter[str]
    # moderation_requests_total summed over the series of the scrape; NaN when it had none.
    scraped_requests: float

    def _of(self, mode: str) -> list[Window]:
        return [window for window in self.windows if window.mode == mode]

    def calls_per_second(self, mode: str) -> float:
        windows = self._of(mode)
        return sum(w.calls for w in windows) / sum(w.seconds for w in windows)

    def cpu_per_call(self, mode: str) -> float:
        windows = self._of(mode)
        return sum(w.gateway_cpu for w in windows) / max(1, sum(w.calls for w in windows))

    @property
    def failures(self) -> int:
        return sum(window.failures for window in self.windows)

    @property
    def spans_per_call(self) -> float:
        return sum(self.spans.values()) / self.traced_calls if self.traced_calls else math.nan


async def closed_loop(
    moderation: moderation_service_pb2_grpc.ModerationServiceStub,
    image: bytes,
    concurrency: int,
    seconds: float,
) -> tuple[int, int, float]:
    """`concurrency` callers, each starting its next call as its last ends, for `seconds`: calls that
    succeeded, calls that failed, and the time until the last one ended."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + seconds
    calls = failures = 0

    async def caller(number: int) -> None:
        nonlocal calls, failures
        while loop.time() < deadline:
            try:
                await moderation.ModerateImage(request(image, f"load-{number}"), timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError:
                failures += 1
            else:
                calls += 1

    await asyncio.gather(*(caller(number) for number in range(concurrency)))
    return calls, failures, loop.time() - started


async def measure_overhead(sizes: TelemetrySizes, progress: Progress) -> TelemetryResult:
    credentials = Credentials.fresh()
    metrics_address = f"127.0.0.1:{processes.free_port()}"
    with (
        processes.emulator(credentials, latency=0.0, qps=None) as emulator,
        otlp_receiver() as (endpoint, receiver),
        otlp_receiver() as (sampled_endpoint, _),
    ):
        # Leaving this block stops the traced gateways, which flush their last spans to the receivers.
        with (
            processes.gateway(
                credentials, emulator.address, IMS_QPS=UNLIMITED_QPS, OTEL_TRACES_EXPORTER="none"
            ) as off,
            processes.gateway(
                credentials, emulator.address, **_traced_settings(endpoint, metrics_address)
            ) as on,
            processes.gateway(
                credentials,
                emulator.address,
                **_traced_settings(sampled_endpoint, f"127.0.0.1:{processes.free_port()}"),
                OTEL_TRACES_SAMPLER="parentbased_traceidratio",
                OTEL_TRACES_SAMPLER_ARG=str(SAMPLED_RATIO),
            ) as sampled,
        ):
            async with (
                open_channel(off.address) as off_channel,
                open_channel(on.address) as on_channel,
                open_channel(sampled.address) as sampled_channel,
            ):
                loads = {
                    OFF: _Load(off, stub(off_channel)),
                    ON: _Load(on, stub(on_channel)),
                    SAMPLED: _Load(sampled, stub(sampled_channel)),
                }
                windows, traced_calls, scraped = await _alternate(
                    loads, emulator, sizes, f"http://{metrics_address}/metrics", progress
                )
        return TelemetryResult(windows, traced_calls, receiver.names(), scraped)


def _traced_settings(otlp_endpoint: str, metrics_address: str) -> dict[str, str]:
    return {
        "IMS_QPS": UNLIMITED_QPS,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
        "MODERATION_METRICS_LISTEN": metrics_address,
    }


@dataclass(frozen=True)
class _Load:
    gateway: Running
    moderation: moderation_service_pb2_grpc.ModerationServiceStub


async def _alternate(
    loads: dict[str, _Load], emulator: Running, sizes: TelemetrySizes, metrics_url: str, progress: Progress
) -> tuple[list[Window], int, float]:
    """Warm-up on each gateway, then rounds of one window each; the /metrics scrape in the first on
    window."""
    image = make_png(256, 256)
    progress(f"telemetry: warm-up, {sizes.warm_up:.0f} s per gateway at {sizes.concurrency} calls in flight")
    traced_calls = 0
    for mode, load in loads.items():
        calls, failures, _ = await closed_loop(load.moderation, image, sizes.concurrency, sizes.warm_up)
        traced_calls += calls + failures if mode == ON else 0
    windows: list[Window] = []
    scraped = math.nan
    for round_number in range(sizes.rounds):
        progress(f"telemetry: windows, round {round_number + 1} of {sizes.rounds}, {sizes.window:.0f} s each")
        # off, on, sampled, sampled, on, off, ...: a drift over the rounds weighs on all alike.
        for mode in (OFF, ON, SAMPLED) if round_number % 2 == 0 else (SAMPLED, ON, OFF):
            scrape = None
            if mode == ON and round_number == 0:
                scrape = asyncio.create_task(_scrape(metrics_url, after=sizes.window / 2))
            windows.append(await _window(mode, loads[mode], emulator, image, sizes))
            traced_calls += windows[-1].calls + windows[-1].failures if mode == ON else 0
            if scrape is not None:
                scraped = await scrape
    return windows, traced_calls, scraped


async def _window(mode: str, load: _Load, emulator: Running, image: bytes, sizes: TelemetrySizes) -> Window:
    gateway_cpu, emulator_cpu, bench_cpu = (
        load.gateway.cpu_seconds(),
        emulator.cpu_seconds(),
        time.process_time(),
    )
    calls, failures, seconds = await closed_loop(load.moderation, image, sizes.concurrency, sizes.window)
    gateway_cpu = load.gateway.cpu_seconds() - gateway_cpu
    emulator_cpu = emulator.cpu_seconds() - emulator_cpu
    bench_cpu = time.process_time() - bench_cpu
    return Window(mode, calls, failures, seconds, gateway_cpu, emulator_cpu, bench_cpu)


async def _scrape(url: str, *, after: float) -> float:
    """moderation_requests_total summed over its series, from one scrape `after` seconds from now."""
    await asyncio.sleep(after)
    async with httpx.AsyncClient() as client:
        text = (await client.get(url, timeout=5.0)).text
    values = [
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(REQUESTS_METRIC + "{")
    ]
    return sum(values) if values else math.nan
