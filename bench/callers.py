"""One run of the many-callers benchmark: authenticated callers, many streams, one budget; raw results.

Against the IMS emulator (in this process, so its counters can be read per phase) at 800 ms, with a
strict 100/s sliding second and 0-20 ms of arrival jitter, in both arrival-stamping modes. Each source
tree (this one, and a baseline revision's) runs every scenario with gateways of its own: the same
load on the same machine in the same run, so the two can be compared.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import secrets
import tempfile
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.circuits import metrics_url, watch_circuits
from bench.fleet import (
    ARRIVAL_JITTER,
    Batch,
    Counters,
    run_batch,
    start_replicas,
    stream_items,
    strict_emulator,
)
from bench.report import ratio
from emulator import ImsEmulator
from emulator.config import ARRIVAL_STAMPS
from emulator.images import make_png
from testbed.client import Metadata, bearer
from testbed.processes import BUDGET_QPS, REPO_ROOT, Credentials, Running, free_port
from testbed.redis_server import redis_server
from testbed.stream import StreamResult

CALLERS = ("caller-1", "caller-2", "caller-3", "caller-4")
# The fairness scenario: caller A's many streams on one replica, caller B's one stream on another.
CALLER_A, CALLER_B, A_STREAMS = "caller-a", "caller-b", 10
# Unary latency is sampled by an identity of its own: another service calling the same gateways.
PROBE = "probe"
MANY_REPLICAS = 3
ONE_REPLICA_STREAMS = 12
SCALING = (1, 2, 4)
IMAGE_SIDE = 64


@dataclass(frozen=True)
class Sizes:
    # Distinct images each stream of the first two scenarios sends.
    images_per_stream: int
    # Items on each of caller A's streams, and on caller B's one stream.
    a_items: int
    b_items: int
    # Items of the one stream of a lone replica (20 s of the budget in a full run: the learned margin's
    # first seconds are not all of it), and split over the replicas of 1, 2 and 4 (24 s, as many as the
    # 3 x 4 callers: at 1,200 the one or two RequestLimitExceeded that teach a start its margin read as
    # 0.2 %, which a sustained load does not pay).
    lone_items: int
    scaling_items: int
    unary_calls: int


FULL = Sizes(
    images_per_stream=200, a_items=100, b_items=1000, lone_items=2000, scaling_items=2400, unary_calls=10
)
QUICK = Sizes(images_per_stream=30, a_items=15, b_items=150, lone_items=300, scaling_items=400, unary_calls=4)


@dataclass(frozen=True)
class Phase:
    """One scenario in one arrival mode."""

    batch: Batch
    circuit_transitions: int

    @property
    def failed(self) -> int:
        return self.batch.client_errors

    def shares(self, first: int) -> tuple[float, float]:
        """The budget spent by streams [:first] and by the rest, each over the time both were busy."""
        groups = (self.batch.streams[:first], self.batch.streams[first:])
        times = [sorted(t for s in group for t in s.result_times) for group in groups]
        if not all(times):
            return (0.0, 0.0)
        start, end = max(t[0] for t in times), min(t[-1] for t in times)
        spent = [sum(start <= t <= end for t in group) for group in times]
        return (ratio(spent[0], (end - start) * BUDGET_QPS), ratio(spent[1], (end - start) * BUDGET_QPS))


@dataclass(frozen=True)
class ModeResult:
    # 3 replicas on Redis, every caller streaming its own images to each.
    many: Phase
    # One replica (no Redis), 12 streams from the 4 callers.
    one_replica: Phase
    # Caller A's streams on replica 1, caller B's one stream on replica 2 (Redis).
    fair: Phase
    # One replica, no Redis, one stream: without jitter, and with it.
    lone_steady: Phase
    lone_jittery: Phase
    # 1, 2 and 4 replicas on Redis, one stream each.
    scaling: tuple[Phase, ...]


@dataclass(frozen=True)
class TreeResult:
    label: str
    modes: dict[str, ModeResult]


@dataclass(frozen=True)
class CallersResult:
    current: TreeResult
    baseline: TreeResult


StreamJob = Callable[[], Coroutine[Any, Any, StreamResult]]


@dataclass
class _Bench:
    emulator: ImsEmulator
    counters: Counters
    credentials: Credentials
    tokens: dict[str, str]
    tokens_file: Path
    sizes: Sizes
    progress: Callable[[str], None]

    def caller(self, name: str) -> Metadata:
        return bearer(self.tokens[name])

    def arrive(self, mode: str, jitter: float = ARRIVAL_JITTER) -> None:
        """Later requests are stamped `mode`, with `jitter`: the handler reads the config per request."""
        self.emulator.config = dataclasses.replace(
            self.emulator.config, arrival_stamp=mode, arrival_jitter=jitter
        )

    def images(self, stream: int, count: int) -> list[bytes]:
        """`count` images no other stream of the phase sends (the verdict cache is off in any case)."""
        first = stream * count
        return [
            make_png(IMAGE_SIDE, IMAGE_SIDE, color=(i % 256, i // 256 % 256, 7))
            for i in range(first, first + count)
        ]

    def job(self, replica: Running, images: Sequence[bytes], items: int, caller: str) -> StreamJob:
        return functools.partial(stream_items, replica.address, images, items, self.caller(caller))

    async def phase(
        self, replicas: Sequence[Running], ports: Sequence[int], jobs: Sequence[StreamJob], *, unary: bool
    ) -> Phase:
        async with watch_circuits([metrics_url(port) for port in ports]) as watch:
            batch = await run_batch(
                self.counters,
                replicas,
                jobs,
                image=make_png(IMAGE_SIDE, IMAGE_SIDE, color=(255, 0, 255)),
                unary_calls=self.sizes.unary_calls if unary else 0,
                unary_on=[r.address for r in replicas] if unary else [],
                unary_metadata=self.caller(PROBE),
            )
        return Phase(batch, watch.transitions)


@contextlib.contextmanager
def _tokens() -> Iterator[tuple[dict[str, str], Path]]:
    """Every caller's token, and the gateways' MODERATION_AUTH_TOKENS_FILE naming them."""
    tokens = {name: secrets.token_hex(16) for name in (*CALLERS, CALLER_A, CALLER_B, PROBE)}
    with tempfile.TemporaryDirectory(prefix="bench-callers-") as folder:
        path = Path(folder) / "tokens"
        path.write_text("".join(f"{name} {token}\n" for name, token in tokens.items()))
        yield tokens, path


@contextlib.contextmanager
def _fleet(bench: _Bench, root: Path, count: int, redis: bool) -> Iterator[tuple[list[Running], list[int]]]:
    """`count` fresh gateways of the tree at `root`, on a fresh redis-server if `redis`: nothing one
    scenario leaves behind (an open circuit, a slowed pace, stale heartbeats) reaches the next."""
    ports = [free_port() for _ in range(count)]
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(redis_server()).url if redis else None
        replicas = stack.enter_context(
            start_replicas(
                bench.credentials,
                bench.emulator.url,
                count,
                redis_url,
                root=root,
                metrics_ports=ports,
                MODERATION_AUTH_TOKENS_FILE=str(bench.tokens_file),
            )
        )
        yield replicas, ports


Jobs = Callable[[list[Running]], list[StreamJob]]


@dataclass(frozen=True)
class _Scenarios:
    """Each scenario of one tree in one arrival mode, on gateways of its own."""

    bench: _Bench
    label: str
    root: Path
    mode: str

    async def run(
        self,
        name: str,
        count: int,
        jobs: Jobs,
        *,
        redis: bool,
        unary: bool = False,
        jitter: float = ARRIVAL_JITTER,
    ) -> Phase:
        self.bench.progress(f"{self.label}, {self.mode}: {name}")
        with _fleet(self.bench, self.root, count, redis) as (replicas, ports):
            self.bench.arrive(self.mode, jitter)
            return await self.bench.phase(replicas, ports, jobs(replicas), unary=unary)

    def every_caller_on_each(self, replicas: list[Running]) -> list[StreamJob]:
        bench, per_stream = self.bench, self.bench.sizes.images_per_stream
        return [
            bench.job(r, bench.images(n * len(CALLERS) + c, per_stream), per_stream, caller)
            for n, r in enumerate(replicas)
            for c, caller in enumerate(CALLERS)
        ]

    def streams_on_one(self, replicas: list[Running]) -> list[StreamJob]:
        bench, per_stream = self.bench, self.bench.sizes.images_per_stream
        return [
            bench.job(replicas[0], bench.images(i, per_stream), per_stream, CALLERS[i % len(CALLERS)])
            for i in range(ONE_REPLICA_STREAMS)
        ]

    def a_and_b(self, replicas: list[Running]) -> list[StreamJob]:
        bench, sizes = self.bench, self.bench.sizes
        a = [bench.job(replicas[0], bench.images(i, 1), sizes.a_items, CALLER_A) for i in range(A_STREAMS)]
        return [*a, bench.job(replicas[1], bench.images(A_STREAMS, 1), sizes.b_items, CALLER_B)]

    def one_stream_each(self, total: int) -> Jobs:
        """One stream on each replica, `total` items split between them."""
        bench = self.bench

        def jobs(replicas: list[Running]) -> list[StreamJob]:
            items = total // len(replicas)
            return [
                bench.job(r, bench.images(i, 1), items, CALLERS[i % len(CALLERS)])
                for i, r in enumerate(replicas)
            ]

        return jobs

    async def all(self) -> ModeResult:
        sizes = self.bench.sizes
        many = await self.run(
            f"{MANY_REPLICAS} replicas x {len(CALLERS)} callers x {sizes.images_per_stream} images",
            MANY_REPLICAS,
            self.every_caller_on_each,
            redis=True,
            unary=True,
        )
        one_replica = await self.run(
            f"1 replica x {ONE_REPLICA_STREAMS} streams", 1, self.streams_on_one, redis=False, unary=True
        )
        fair = await self.run(
            f"caller A: {A_STREAMS} streams on replica 1, B: 1 on replica 2", 2, self.a_and_b, redis=True
        )
        lone = [
            await self.run(
                f"1 replica, no Redis, one stream, {jitter * 1000:.0f} ms jitter",
                1,
                self.one_stream_each(sizes.lone_items),
                redis=False,
                jitter=jitter,
            )
            for jitter in (0.0, ARRIVAL_JITTER)
        ]
        scaling = [
            await self.run(
                f"{count} replica(s) on Redis, one stream each",
                count,
                self.one_stream_each(sizes.scaling_items),
                redis=True,
            )
            for count in SCALING
        ]
        return ModeResult(many, one_replica, fair, lone[0], lone[1], tuple(scaling))


async def _tree(bench: _Bench, label: str, root: Path) -> TreeResult:
    return TreeResult(
        label, {mode: await _Scenarios(bench, label, root, mode).all() for mode in ARRIVAL_STAMPS}
    )


async def measure(sizes: Sizes, baseline_root: Path, progress: Callable[[str], None]) -> CallersResult:
    credentials = Credentials.fresh()
    with strict_emulator(credentials) as emulator, _tokens() as (tokens, tokens_file):
        bench = _Bench(emulator, Counters(emulator), credentials, tokens, tokens_file, sizes, progress)
        baseline = await _tree(bench, "baseline", baseline_root)
        current = await _tree(bench, "current", REPO_ROOT)
    return CallersResult(current, baseline)
