"""One run of the asynchronous-tasks benchmark: a burst of SubmitModeration over two replicas sharing
one budget through a real redis-server, while a stream runs, against the IMS emulator (in this process,
so its billed calls can be counted); callbacks to a loopback receiver. The same stream and unary calls
run first without tasks, as the baseline."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from moderation.v1.moderation_service_pb2 import ModerateImageRequest, SubmitModerationRequest

from bench import async_memory
from bench.async_memory import TaskMemory
from bench.fleet import start_replicas
from bench.latency import LatencySample, sample_unary
from bench.sections import Progress
from emulator import EmulatorConfig, ImsEmulator
from emulator.images import make_png
from testbed.client import open_channel, stub
from testbed.fileserver import serve_handler
from testbed.processes import BUDGET_QPS, EMULATOR_LATENCY, Credentials
from testbed.redis_server import redis_server
from testbed.stream import StreamResult, run_stream

__all__ = ["FULL", "QUICK", "AsyncResult", "Sizes", "measure"]

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# Submissions in flight at once, over both replicas: a burst, not a trickle.
SUBMIT_CONCURRENCY = 200
WINDOW_CLEAR = 1.5
# Longer than 10,000 tasks take at the budget's 100/s.
DRAIN_TIMEOUT = 600.0


@dataclass(frozen=True)
class Sizes:
    tasks: int
    stream_items: int
    unary_calls: int
    # Finished tasks stored to measure their memory.
    stored: int


FULL = Sizes(tasks=10_000, stream_items=1_000, unary_calls=20, stored=20_000)
QUICK = Sizes(tasks=1_000, stream_items=300, unary_calls=10, stored=5_000)


@dataclass(frozen=True)
class Phase:
    stream: StreamResult
    unary: LatencySample

    @property
    def stream_throughput(self) -> float:
        span = self.stream.last_answer - self.stream.first_answer
        return self.stream.results / span if span > 0 else float("nan")


@dataclass(frozen=True)
class AsyncResult:
    baseline: Phase
    loaded: Phase
    submissions: LatencySample
    # Seconds from the burst's first submission to its last one answered, and to its last callback.
    burst: float
    drained: float
    callbacks: int
    callbacks_per_second: float
    billed: int
    # Seconds from the burst's first submission to the last call IMS received: the time the budget
    # could be spent. The last call's answer (the emulator's latency) and its callback come after it.
    spending: float
    # Billed calls over what the budget allowed while it could be spent.
    budget_share: float
    # The same while the stream and unary calls ran beside the tasks, and after, with tasks alone.
    share_beside_stream: float
    share_tasks_alone: float
    # Calls IMS refused as over its limit (RequestLimitExceeded): the budget overshot.
    rate_limited: int
    memory: TaskMemory


@dataclass
class _Callbacks:
    """The first arrival of each task's callback; `all_in` set once `expected` tasks were called back."""

    expected: int
    arrivals: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    all_in: threading.Event = field(default_factory=threading.Event)

    def arrived(self, task_id: str) -> None:
        with self.lock:
            self.arrivals.setdefault(task_id, time.monotonic())
            self._check()

    def expect(self, count: int) -> None:
        with self.lock:
            self.expected = count
            self._check()

    def _check(self) -> None:
        if len(self.arrivals) >= self.expected:
            self.all_in.set()


@contextlib.contextmanager
def _receiver(callbacks: _Callbacks) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            callbacks.arrived(self.headers["webhook-id"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    with serve_handler(Handler) as url:
        yield url


async def _phase(stream_address: str, unary_address: str, image: bytes, sizes: Sizes) -> Phase:
    async with open_channel(stream_address) as streaming, open_channel(unary_address) as unary:
        stream = asyncio.create_task(run_stream(stub(streaming), [image], sizes.stream_items))
        sample = await sample_unary(stub(unary), image, sizes.unary_calls, prefix="unary", stop=stream.done)
        return Phase(await stream, sample)


async def _burst(addresses: list[str], count: int, callback_url: str) -> LatencySample:
    sample = LatencySample()
    slots = asyncio.Semaphore(SUBMIT_CONCURRENCY)
    image = make_png(64, 64)
    async with contextlib.AsyncExitStack() as stack:
        stubs = [stub(await stack.enter_async_context(open_channel(a))) for a in addresses]

        async def one(index: int) -> None:
            async with slots:
                started = time.perf_counter()
                try:
                    await stubs[index % len(stubs)].SubmitModeration(
                        SubmitModerationRequest(
                            request=ModerateImageRequest(content=image, data_id=f"task-{index}"),
                            callback_url=callback_url,
                        ),
                        timeout=30,
                    )
                except Exception:
                    sample.failures += 1
                else:
                    sample.seconds.append(time.perf_counter() - started)

        await asyncio.gather(*(one(i) for i in range(count)))
    return sample


async def measure(sizes: Sizes, progress: Progress) -> AsyncResult:
    progress(f"memory: {sizes.stored:,} finished tasks in Redis, then in the process")
    memory = await async_memory.measure(sizes.stored)
    credentials = Credentials.fresh()
    config = EmulatorConfig(
        secret_id=credentials.secret_id,
        secret_key=credentials.secret_key,
        latency=EMULATOR_LATENCY,
        qps_limit=BUDGET_QPS,
    )
    image = make_png(256, 256)
    callbacks = _Callbacks(sizes.tasks)
    with (
        ImsEmulator(config, host="127.0.0.1", port=0) as emulator,
        redis_server() as redis,
        _receiver(callbacks) as receiver_url,
        start_replicas(
            credentials,
            emulator.url,
            2,
            redis.url,
            MODERATION_WEBHOOK_SECRETS=SECRET,
            MODERATION_CALLBACK_ALLOW_HTTP="on",
            MODERATION_CALLBACK_ALLOWED_NETWORKS="127.0.0.0/8",
        ) as replicas,
    ):
        first, second = (r.address for r in replicas)
        progress(f"baseline: a stream of {sizes.stream_items} items, unary calls beside it")
        baseline = await _phase(first, second, image, sizes)
        await asyncio.sleep(WINDOW_CLEAR)
        progress(f"burst: {sizes.tasks} tasks over two replicas while the same stream runs")
        emulator.reset_stats()
        started, started_wall = time.monotonic(), time.time()
        loaded_phase = asyncio.create_task(_phase(first, second, image, sizes))
        submissions = await _burst([first, second], sizes.tasks, receiver_url + "/hook")
        burst = time.monotonic() - started
        loaded = await loaded_phase
        stream_ended, billed_beside_stream = time.time(), emulator.stats.billed
        callbacks.expect(sizes.tasks - submissions.failures)
        if not await asyncio.to_thread(callbacks.all_in.wait, DRAIN_TIMEOUT):
            raise RuntimeError(f"{len(callbacks.arrivals)} of {callbacks.expected} tasks called back")
        arrivals = sorted(callbacks.arrivals.values())
        drained = arrivals[-1] - started
        billed, rate_limited = emulator.stats.billed, emulator.stats.rate_limited
        last_call = max(when for when, _ in emulator.stats.received)
    span = arrivals[-1] - arrivals[0]
    return AsyncResult(
        baseline,
        loaded,
        submissions,
        burst,
        drained,
        len(arrivals),
        (len(arrivals) - 1) / span if span > 0 else float("nan"),
        billed,
        last_call - started_wall,
        billed / (BUDGET_QPS * (last_call - started_wall)),
        billed_beside_stream / (BUDGET_QPS * (stream_ended - started_wall)),
        (billed - billed_beside_stream) / (BUDGET_QPS * max(1e-9, last_call - stream_ended)),
        rate_limited,
        memory,
    )
