"""One measurement run: every phase, in order, against one emulator; raw results only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.baseline import BaselineResult, run_baseline
from bench.latency import LatencySample, sample_unary
from bench.memory import MemoryResult, large_image, peak_rss
from emulator.images import make_png
from testbed import processes
from testbed.client import open_channel, stub
from testbed.processes import Credentials
from testbed.stream import StreamResult, run_stream

# The emulator's limit is a sliding second: pausing longer keeps each phase out of the last one's window.
WINDOW_CLEAR = 1.5


@dataclass(frozen=True)
class Sizes:
    stream_items: int
    unary_calls: int
    # Unary calls under load start once this many stream items are answered: the stream is steady.
    steady_after: int
    sweep_items: int
    sweep_concurrencies: tuple[int, ...]
    rss_lengths: tuple[int, int]


# At 800 ms latency, 80 calls in flight spend the 100/s budget: the sweep brackets that.
# The memory streams stay full size even in a quick run (about 35 s): 20 vs 60 images of 5 MB ended
# before the peak reached the window's plateau (1.33x), a miss that says nothing about the bound.
MEMORY_STREAMS = (100, 300)
FULL = Sizes(3000, 30, 300, 800, (50, 80, 120, 200), MEMORY_STREAMS)
QUICK = Sizes(300, 30, 30, 200, (50, 80, 200), MEMORY_STREAMS)


@dataclass(frozen=True)
class GatewayResult:
    idle: LatencySample
    loaded: LatencySample
    stream: StreamResult
    # CPU time over the stream's wall time: cores busy, for the gateway and for this process.
    gateway_cores: float
    bench_cores: float


@dataclass(frozen=True)
class RunResult:
    gateway: GatewayResult
    sweep: list[BaselineResult]
    baseline: BaselineResult
    memory: tuple[MemoryResult, MemoryResult]


async def measure(sizes: Sizes, progress: Callable[[str], None]) -> RunResult:
    credentials = Credentials.fresh()
    image = make_png(256, 256)
    with processes.emulator(credentials) as emulator:
        progress("gateway: unary at idle, then the stream with unary calls alongside")
        gateway = await _gateway_phase(emulator.address, credentials, image, sizes)
        sweep = []
        for concurrency in sizes.sweep_concurrencies:
            await asyncio.sleep(WINDOW_CLEAR)
            progress(f"baseline sweep: {sizes.sweep_items} items at concurrency {concurrency}")
            sweep.append(
                await _baseline(emulator.address, credentials, image, sizes.sweep_items, concurrency)
            )
        best = max(sweep, key=lambda result: result.throughput).concurrency
        await asyncio.sleep(WINDOW_CLEAR)
        progress(f"baseline: {sizes.stream_items} items at concurrency {best}")
        baseline = await _baseline(emulator.address, credentials, image, sizes.stream_items, best)
        big = large_image()
        memory = []
        for length in sizes.rss_lengths:
            await asyncio.sleep(WINDOW_CLEAR)
            progress(f"memory: {length} images of {len(big):,} bytes through a fresh gateway")
            memory.append(await peak_rss(emulator.address, credentials, big, length))
    return RunResult(gateway, sweep, baseline, (memory[0], memory[1]))


async def _baseline(
    emulator_url: str, credentials: Credentials, image: bytes, items: int, concurrency: int
) -> BaselineResult:
    # In a thread: blocking work inside a coroutine would stall the event loop.
    return await asyncio.to_thread(run_baseline, emulator_url, credentials, image, items, concurrency)


async def _gateway_phase(
    emulator_url: str, credentials: Credentials, image: bytes, sizes: Sizes
) -> GatewayResult:
    with processes.gateway(credentials, emulator_url) as gateway:
        # Unary callers are other services, with their own connections: a channel of their own.
        async with (
            open_channel(gateway.address) as stream_channel,
            open_channel(gateway.address) as unary_channel,
        ):
            idle = await sample_unary(stub(unary_channel), image, sizes.unary_calls, prefix="idle")
            await asyncio.sleep(WINDOW_CLEAR)
            steady = asyncio.Event()
            loop = asyncio.get_running_loop()
            started, gateway_cpu, bench_cpu = loop.time(), gateway.cpu_seconds(), time.process_time()
            streaming = asyncio.create_task(
                run_stream(
                    stub(stream_channel),
                    [image],
                    sizes.stream_items,
                    steady=steady,
                    steady_after=sizes.steady_after,
                )
            )
            await steady.wait()
            loaded = await sample_unary(
                stub(unary_channel), image, sizes.unary_calls, prefix="loaded", stop=streaming.done
            )
            stream = await streaming
            gateway_cpu = gateway.cpu_seconds() - gateway_cpu
            bench_cpu = time.process_time() - bench_cpu
            wall = loop.time() - started
    return GatewayResult(idle, loaded, stream, gateway_cpu / wall, bench_cpu / wall)
