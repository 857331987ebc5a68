"""One run of the fleet benchmark: gateway replicas sharing one budget through a real redis-server,
against the IMS emulator's strict sliding-second limit with a varying arrival delay; raw results only.

The emulator runs in this process so its counters (RequestLimitExceeded, billed calls, the most
admitted in any sliding second) can be read per phase; the gateways and redis-server are subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.fleet_senders import Timeline, tally, watch_senders
from bench.latency import LatencySample, sample_unary
from bench.report import ratio
from emulator import EmulatorConfig, ImsEmulator
from emulator.images import make_png
from testbed import processes
from testbed.client import Metadata, open_channel, stub
from testbed.processes import BUDGET_QPS, EMULATOR_LATENCY, REPO_ROOT, Credentials, Running
from testbed.redis_server import RedisServer, redis_server
from testbed.stream import StreamResult, run_stream

ARRIVAL_JITTER = 0.02
REPLICA_COUNTS = (1, 2, 4)
OUTAGE = 5.0
# The full pace is judged over this long, starting 2 s after Redis is back.
RECOVERY_WINDOW = 2.0
# The sliding second must clear between phases, or one phase's sends count in the next one's window.
WINDOW_CLEAR = 1.5


@dataclass(frozen=True)
class Sizes:
    # Items per batch, split over the replicas streaming at once.
    batch_items: int
    unary_calls: int
    # Items per replica in the outage phase: long enough to stream before, through and after it.
    outage_items: int
    # Seconds of streaming before Redis is stopped.
    outage_after: float


FULL = Sizes(batch_items=1600, unary_calls=10, outage_items=800, outage_after=3.0)
QUICK = Sizes(batch_items=400, unary_calls=4, outage_items=700, outage_after=2.0)


@dataclass(frozen=True)
class Upstream:
    """What the emulator counted during one phase."""

    requests: int
    rate_limited: int
    billed: int
    most_in_one_second: int

    @property
    def rate_limited_per_call(self) -> float:
        return ratio(self.rate_limited, self.requests)


def _not_answered_once(stream: StreamResult) -> int:
    """Items answered with an error, never answered or answered twice, and a call that did not end OK."""
    return sum(stream.errors.values()) + stream.missing + stream.duplicates + (stream.call_error is not None)


@dataclass(frozen=True)
class Batch:
    replicas: int
    streams: list[StreamResult]
    idle: list[LatencySample]
    loaded: list[LatencySample]
    upstream: Upstream
    # The calls each replica (of them all, busy or idle) sent IMS, second by second, as IMS saw them.
    sent: Timeline = field(default_factory=Timeline)

    @property
    def results(self) -> int:
        return sum(s.results for s in self.streams)

    @property
    def budget_spent(self) -> float:
        """Calls answered per second over the budget, from the first stream answer to the last (any
        stream): the stream items and the unary calls sampled meanwhile, which spend the same budget."""
        span = max(s.last_answer for s in self.streams) - min(s.first_answer for s in self.streams)
        unary = sum(len(sample.seconds) for sample in self.loaded)
        return ratio(self.results + unary - 1, span * BUDGET_QPS)

    @property
    def billed_per_item(self) -> float:
        unary = sum(len(sample.seconds) for sample in self.loaded)
        return ratio(self.upstream.billed, self.results + unary)

    @property
    def failures(self) -> Counter[str]:
        """Every item not answered exactly once and every failed unary call, by status code and ErrorInfo
        reason (`CODE/REASON`), or by what went wrong (never answered, answered twice, the call ended)."""
        failures: Counter[str] = Counter()
        for result in self.streams:
            failures.update(result.errors)
            failures.update({"never answered": result.missing, "answered twice": result.duplicates})
            if result.call_error is not None:
                failures[f"stream ended {result.call_error.split(':', 1)[0]}"] += 1
        failures["unary call failed"] += sum(sample.failures for sample in self.loaded)
        return +failures

    @property
    def client_errors(self) -> int:
        return sum(self.failures.values())

    @property
    def worst_unary_ratio(self) -> float:
        """The highest, over replicas, of unary p50 during the batch against that replica's idle p50."""
        return max(
            ratio(loaded.percentile(0.5), idle.percentile(0.5))
            for idle, loaded in zip(self.idle, self.loaded, strict=True)
        )


@dataclass(frozen=True)
class Outage:
    streams: list[StreamResult]
    # During the outage only, and over the whole phase.
    during: Upstream
    whole: Upstream
    # Admitted calls per second over the budget, RECOVERY_WINDOW long from 2 s after the restart.
    recovered_pace: float

    @property
    def lost_or_failed(self) -> int:
        return sum(map(_not_answered_once, self.streams))


@dataclass(frozen=True)
class FleetResult:
    batches: list[Batch]
    # One replica streaming, the others (of the largest fleet) idle.
    busy_alone: Batch
    # Today's per-replica governor (no MODERATION_REDIS_URL), two replicas streaming at once.
    baseline: Batch
    outage: Outage


class Counters:
    """The emulator's counters since the last mark."""

    def __init__(self, emulator: ImsEmulator) -> None:
        self._emulator = emulator

    def reset(self) -> None:
        self._emulator.reset_stats()

    def snapshot(self) -> Upstream:
        stats = self._emulator.stats
        return Upstream(stats.requests, stats.rate_limited, stats.billed, stats.max_in_one_second)

    @property
    def port(self) -> int:
        return self._emulator.port

    def arrivals(self) -> list[tuple[float, int]]:
        """(arrival stamp, client port) of every call since the last mark."""
        return self._emulator.stats.arrivals


def _difference(later: Upstream, earlier: Upstream) -> Upstream:
    return Upstream(
        later.requests - earlier.requests,
        later.rate_limited - earlier.rate_limited,
        later.billed - earlier.billed,
        later.most_in_one_second,
    )


@contextlib.contextmanager
def start_replicas(
    credentials: Credentials,
    emulator_url: str,
    count: int,
    redis_url: str | None,
    *,
    root: Path = REPO_ROOT,
    metrics_ports: Sequence[int] = (),
    **settings: str,
) -> Iterator[list[Running]]:
    """`count` gateways of the tree at `root`, sharing the budget through `redis_url` (None: each its own);
    replica i serves /metrics on `metrics_ports[i]` when given."""
    fleet = {"MODERATION_REDIS_URL": redis_url} if redis_url else {}
    metrics = [{"MODERATION_METRICS_LISTEN": f"127.0.0.1:{port}"} for port in metrics_ports]
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(
                processes.tree_gateway(
                    root, credentials, emulator_url, {**fleet, **settings, **(metrics[i] if metrics else {})}
                )
            )
            for i in range(count)
        ]


async def stream_items(
    address: str, images: Sequence[bytes], items: int, metadata: Metadata = ()
) -> StreamResult:
    async with open_channel(address) as channel:
        return await run_stream(stub(channel), images, items, metadata=metadata)


async def _unary(
    address: str, image: bytes, calls: int, prefix: str, stop: Callable[[], bool], metadata: Metadata
) -> LatencySample:
    async with open_channel(address) as channel:
        return await sample_unary(stub(channel), image, calls, prefix=prefix, stop=stop, metadata=metadata)


async def run_batch(
    counters: Counters,
    replicas: Sequence[Running],
    jobs: Sequence[Callable[[], Coroutine[Any, Any, StreamResult]]],
    *,
    image: bytes,
    unary_calls: int,
    unary_on: Sequence[str],
    unary_metadata: Metadata = (),
) -> Batch:
    """Idle unary latency on each gateway of `unary_on` (addresses), then every stream of `jobs` at once
    while each of them samples unary latency again; what each of `replicas` sent IMS meanwhile."""
    idle = await asyncio.gather(
        *(_unary(address, image, unary_calls, "idle", lambda: False, unary_metadata) for address in unary_on)
    )
    await asyncio.sleep(WINDOW_CLEAR)
    counters.reset()
    async with watch_senders([r.pid for r in replicas], counters.port) as senders:
        streams = [asyncio.create_task(job()) for job in jobs]
        done = lambda: all(task.done() for task in streams)  # noqa: E731
        loaded = await asyncio.gather(
            *(_unary(address, image, unary_calls, "loaded", done, unary_metadata) for address in unary_on)
        )
        results = await asyncio.gather(*streams)
    upstream = counters.snapshot()
    sent = tally(counters.arrivals(), senders.owners, len(replicas))
    await asyncio.sleep(WINDOW_CLEAR)
    return Batch(len(replicas), list(results), list(idle), list(loaded), upstream, sent)


async def _batch(
    counters: Counters,
    replicas: list[Running],
    streaming: list[Running],
    image: bytes,
    sizes: Sizes,
    items: int,
) -> Batch:
    """Every replica in `streaming` streams `items` at once, with unary calls on each (run_batch)."""
    jobs = [functools.partial(stream_items, r.address, [image], items) for r in streaming]
    addresses = [r.address for r in streaming]
    return await run_batch(
        counters, replicas, jobs, image=image, unary_calls=sizes.unary_calls, unary_on=addresses
    )


async def _outage(
    counters: Counters, replicas: list[Running], redis: RedisServer, image: bytes, sizes: Sizes
) -> Outage:
    loop = asyncio.get_running_loop()
    counters.reset()
    streams = [asyncio.create_task(stream_items(r.address, [image], sizes.outage_items)) for r in replicas]
    await asyncio.sleep(sizes.outage_after)
    before = counters.snapshot()
    await asyncio.to_thread(redis.stop)
    await asyncio.sleep(OUTAGE)
    during = _difference(counters.snapshot(), before)
    await asyncio.to_thread(redis.start)
    await asyncio.sleep(2.0)
    billed, since = counters.snapshot().billed, loop.time()
    await asyncio.sleep(RECOVERY_WINDOW)
    pace = (counters.snapshot().billed - billed) / (loop.time() - since) / BUDGET_QPS
    results = await asyncio.gather(*streams)
    return Outage(list(results), during, counters.snapshot(), pace)


def strict_emulator(credentials: Credentials) -> ImsEmulator:
    """IMS as the fleet sections meet it: its latency, a strict sliding-second budget, jittery arrivals."""
    config = EmulatorConfig(
        secret_id=credentials.secret_id,
        secret_key=credentials.secret_key,
        latency=EMULATOR_LATENCY,
        qps_limit=BUDGET_QPS,
        arrival_jitter=ARRIVAL_JITTER,
    )
    return ImsEmulator(config, host="127.0.0.1", port=0)


async def measure(sizes: Sizes, progress: Callable[[str], None]) -> FleetResult:
    credentials = Credentials.fresh()
    image = make_png(64, 64)
    with strict_emulator(credentials) as emulator, redis_server() as redis:
        counters = Counters(emulator)
        batches: list[Batch] = []
        busy_alone: Batch | None = None
        for count in REPLICA_COUNTS:
            progress(f"fleet: {count} replica(s) streaming {sizes.batch_items // count} items each at once")
            with start_replicas(credentials, emulator.url, count, redis.url) as replicas:
                batches.append(
                    await _batch(counters, replicas, replicas, image, sizes, sizes.batch_items // count)
                )
                if count == REPLICA_COUNTS[-1]:
                    progress(
                        f"fleet: one of {count} replicas streaming {sizes.batch_items} items, the rest idle"
                    )
                    busy_alone = await _batch(
                        counters, replicas, replicas[:1], image, sizes, sizes.batch_items
                    )
        assert busy_alone is not None
        progress("baseline: 2 replicas on today's per-replica governor (no Redis), streaming at once")
        with start_replicas(credentials, emulator.url, 2, None) as replicas:
            baseline = await _batch(counters, replicas, replicas, image, sizes, sizes.batch_items // 2)
        progress(f"fleet: 2 replicas streaming; Redis stopped for {OUTAGE:.0f} s and restarted empty")
        with start_replicas(credentials, emulator.url, 2, redis.url) as replicas:
            outage = await _outage(counters, replicas, redis, image, sizes)
    return FleetResult(batches, busy_alone, baseline, outage)
