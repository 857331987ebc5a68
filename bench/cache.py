"""One run of the cache benchmark; raw results only.

Stream: a 10,000-item stream in which 30 % of the items are distinct images (each distinct image once,
the other items Zipf-distributed repeats of them, shuffled), split over 2 gateway replicas streaming at
once and sharing one Redis (the fleet's budget and the verdict cache), against the IMS emulator in this
process (800 ms, 100 requests/s strict sliding second), whose counters say what was billed. Every
answer is checked against the verdict the emulator's marker in that image asks for. The same stream
again with `MODERATION_CACHE=off` is the baseline for the wall time.

Hit path: closed-loop unary calls of one cached image on a gateway (`MODERATION_CACHE=memory`, on its
default uvloop), the same gateway on the asyncio loop, and a bare grpc.aio server answering the same
messages (`bench.cache_echo`, on asyncio), in turns; the gateways' CPU read from /proc.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import (
    ModerateImageRequest,
    ModerateImageResponse,
    StreamModerateImagesRequest,
    StreamModerateImagesResponse,
    Suggestion,
)

from bench.local_perf import Throughput
from bench.telemetry_overhead import closed_loop
from emulator import EmulatorConfig, ImsEmulator
from emulator.images import make_png
from testbed import processes
from testbed.client import error_label, open_channel, stub
from testbed.processes import BUDGET_QPS, EMULATOR_LATENCY, Credentials, Running
from testbed.redis_server import redis_server
from testbed.stream import drive_stream

Stub = moderation_service_pb2_grpc.ModerationServiceStub
ZIPF_EXPONENT = 1.1
SUGGESTIONS = ("Pass", "Review", "Block")
LABELS = {"Pass": "Normal", "Review": "Terror", "Block": "Porn"}
REPLICAS = 2
# Unary hit path: callers in flight, seconds per window, windows per server (alternating).
HIT_CONCURRENCY = 32


@dataclass(frozen=True)
class Sizes:
    items: int
    distinct_share: float
    hit_window: float
    hit_rounds: int


FULL = Sizes(items=10_000, distinct_share=0.3, hit_window=5.0, hit_rounds=3)
QUICK = Sizes(items=1_000, distinct_share=0.3, hit_window=2.0, hit_rounds=1)

Verdict = tuple[Suggestion.ValueType, str, str, int]


@dataclass(frozen=True)
class Workload:
    images: list[bytes]
    # The verdict each distinct image's marker asks the emulator for.
    expected: list[Verdict]
    # Indexes into `images`, in stream order.
    sequence: list[int]


def workload(sizes: Sizes, seed: int) -> Workload:
    distinct = round(sizes.items * sizes.distinct_share)
    images, expected = [], []
    for n in range(distinct):
        suggestion = SUGGESTIONS[n % 3]
        score = n % 101
        # The sub-label makes every image's bytes (and verdict) its own.
        images.append(make_png(64, 64, f"IMSEMU:{suggestion}:{LABELS[suggestion]}:Img{n}:{score}"))
        expected.append(
            (Suggestion.Value(f"SUGGESTION_{suggestion.upper()}"), LABELS[suggestion], f"Img{n}", score)
        )
    rng = random.Random(seed)
    weights = [1 / (rank + 1) ** ZIPF_EXPONENT for rank in range(distinct)]
    repeats = rng.choices(range(distinct), weights=weights, k=sizes.items - distinct)
    sequence = [*range(distinct), *repeats]
    rng.shuffle(sequence)
    return Workload(images, expected, sequence)


@dataclass
class StreamTally:
    answered: int = 0
    wrong: int = 0
    cached: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    call_error: str | None = None
    last_answer: float = 0.0


@dataclass(frozen=True)
class StreamPhase:
    cache: str
    items: int
    distinct: int
    billed: int
    rate_limited: int
    wall_seconds: float
    streams: list[StreamTally]

    @property
    def billed_per_item(self) -> float:
        return self.billed / self.items

    @property
    def wrong(self) -> int:
        return sum(s.wrong for s in self.streams)

    @property
    def failed(self) -> int:
        """Items with an error, or never answered, and calls that did not end OK."""
        answered = sum(s.answered for s in self.streams)
        errors = sum(sum(s.errors.values()) for s in self.streams)
        return errors + (self.items - answered) + sum(s.call_error is not None for s in self.streams)


# The hit path's targets: the gateway as it runs by default (MODERATION_EVENT_LOOP=uvloop), the gateway
# on the standard library's loop (the same loop as the yardstick), and the bare grpc.aio yardstick.
GATEWAY, ON_ASYNCIO, ECHO = "gateway", "gateway on asyncio", "bare server"


@dataclass(frozen=True)
class HitPath:
    # Each target's calls (one image each), seconds and, for a gateway, CPU.
    served: dict[str, Throughput]
    failures: int

    @property
    def gateway_rate(self) -> float:
        return self.served[GATEWAY].rate

    @property
    def asyncio_rate(self) -> float:
        return self.served[ON_ASYNCIO].rate

    @property
    def echo_rate(self) -> float:
        return self.served[ECHO].rate

    @property
    def cpu_per_hit(self) -> float:
        return self.served[GATEWAY].cpu_per_image


@dataclass(frozen=True)
class CacheResult:
    cached: StreamPhase
    uncached: StreamPhase
    hits: HitPath
    # The machine's 1-minute load average at the start and the end of the run.
    load: tuple[float, float]


async def _stream(address: str, work: Workload, indexes: list[int], tally: StreamTally) -> None:
    def item(number: int) -> StreamModerateImagesRequest:
        position = indexes[number]
        return StreamModerateImagesRequest(
            correlation_id=str(position),
            request=ModerateImageRequest(
                content=work.images[work.sequence[position]], data_id=f"i{position}"
            ),
        )

    def record(answer: StreamModerateImagesResponse, now: float) -> None:
        tally.answered += 1
        tally.last_answer = now
        if not answer.HasField("result"):
            tally.errors[error_label(answer.error)] += 1
            return
        result = answer.result
        expected = work.expected[work.sequence[int(answer.correlation_id)]]
        got = (result.suggestion, result.label, result.sub_label, result.score)
        tally.wrong += got != expected or result.data_id != f"i{answer.correlation_id}"
        tally.cached += result.cached

    timeout = len(indexes) / BUDGET_QPS * 2 + 120
    async with open_channel(address) as channel:
        error = await drive_stream(
            stub(channel).StreamModerateImages, item, len(indexes), record, timeout=timeout
        )
    if error is not None:
        tally.call_error = f"{error.code().name}: {error.details()}"


async def _stream_phase(
    cache: str, work: Workload, emulator: ImsEmulator, credentials: Credentials, redis_url: str
) -> StreamPhase:
    settings = {"MODERATION_REDIS_URL": redis_url, "MODERATION_CACHE": cache}
    with (
        processes.gateway(credentials, emulator.url, **settings) as first,
        processes.gateway(credentials, emulator.url, **settings) as second,
    ):
        replicas = [first, second]
        emulator.reset_stats()
        loop = asyncio.get_running_loop()
        started = loop.time()
        tallies = [StreamTally() for _ in replicas]
        positions = list(range(len(work.sequence)))
        await asyncio.gather(
            *(
                _stream(replica.address, work, positions[number::REPLICAS], tallies[number])
                for number, replica in enumerate(replicas)
            )
        )
        wall = max(t.last_answer for t in tallies) - started
        stats = emulator.stats
        return StreamPhase(
            cache, len(work.sequence), len(work.images), stats.billed, stats.rate_limited, wall, tallies
        )


async def _hit_path(sizes: Sizes, credentials: Credentials, progress: Callable[[str], None]) -> HitPath:
    image = make_png(64, 64, "IMSEMU:Review:Terror:Knife:93")
    hit_settings = {"MODERATION_CACHE": "memory", "IMS_QPS": "100000"}
    with (
        processes.emulator(credentials, latency=0.0, qps=None) as emulator,
        processes.gateway(credentials, emulator.address, **hit_settings) as gateway,
        processes.gateway(
            credentials, emulator.address, **hit_settings, MODERATION_EVENT_LOOP="asyncio"
        ) as on_asyncio,
    ):
        async with open_channel(gateway.address) as channel, open_channel(on_asyncio.address) as other:
            # The first call fills the cache; its answer, as a hit gives it, is what the echo server sends.
            first = await stub(channel).ModerateImage(ModerateImageRequest(content=image), timeout=10)
            hit: ModerateImageResponse = await stub(channel).ModerateImage(
                ModerateImageRequest(content=image), timeout=10
            )
            assert hit.cached
            assert hit.request_id == first.request_id
            await stub(other).ModerateImage(ModerateImageRequest(content=image), timeout=10)
            port = processes.free_port()
            with processes.worker(
                ["bench.cache_echo", str(port), hit.SerializeToString().hex()], "ready"
            ) as _:
                async with open_channel(f"127.0.0.1:{port}") as echo_channel:
                    targets = {
                        GATEWAY: (stub(channel), gateway),
                        ON_ASYNCIO: (stub(other), on_asyncio),
                        ECHO: (stub(echo_channel), None),
                    }
                    return await _alternate(sizes, targets, image, progress)


async def _alternate(
    sizes: Sizes,
    targets: dict[str, tuple[Stub, Running | None]],
    image: bytes,
    progress: Callable[[str], None],
) -> HitPath:
    """Each target in turn, window by window, the order reversed every round so a drift weighs on all
    alike; a gateway's CPU read from /proc around its own windows."""
    served = {name: Throughput() for name in targets}
    failures = 0
    for target, _ in targets.values():
        await closed_loop(target, image, HIT_CONCURRENCY, 1.0)
    progress(f"cache: hit path, {sizes.hit_rounds} rounds of {sizes.hit_window:.0f} s per server")
    names = list(targets)
    for round_number in range(sizes.hit_rounds):
        for name in names if round_number % 2 == 0 else reversed(names):
            target, process = targets[name]
            before = process.cpu_seconds() if process else 0.0
            calls, failed, seconds = await closed_loop(target, image, HIT_CONCURRENCY, sizes.hit_window)
            tally = served[name]
            tally.cpu_seconds += (process.cpu_seconds() - before) if process else 0.0
            tally.images += calls
            tally.seconds += seconds
            failures += failed
    return HitPath(served, failures)


async def measure(sizes: Sizes, number: int, progress: Callable[[str], None]) -> CacheResult:
    load_before = os.getloadavg()[0]
    credentials = Credentials.fresh()
    work = workload(sizes, seed=number)
    config = EmulatorConfig(
        secret_id=credentials.secret_id,
        secret_key=credentials.secret_key,
        latency=EMULATOR_LATENCY,
        qps_limit=BUDGET_QPS,
    )
    with ImsEmulator(config, host="127.0.0.1", port=0) as emulator, redis_server() as redis:
        progress(
            f"cache: {sizes.items} items ({len(work.images)} distinct) over {REPLICAS} replicas, cache on"
        )
        started = time.monotonic()
        cached = await _stream_phase("redis", work, emulator, credentials, redis.url)
        progress(f"cache: on took {time.monotonic() - started:.0f} s; now MODERATION_CACHE=off")
        uncached = await _stream_phase("off", work, emulator, credentials, redis.url)
    hits = await _hit_path(sizes, credentials, progress)
    return CacheResult(cached, uncached, hits, (load_before, os.getloadavg()[0]))
