"""The worker with the in-process store and a stand-in for the servicer's path: a task whose outcome
was saved is not moderated again, a task the budget has no slot for yet waits and asks again, and a
task past its deadline fails saying why."""

from __future__ import annotations

import asyncio

import grpc
from moderation.v1.moderation_service_pb2 import (
    DeliveryState,
    ModerateImageRequest,
    ModerateImageResponse,
    TaskState,
)
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from backends.errors import BackendError, Kind
from common.scrub import Scrubber
from service import errors
from service.deadlines import Deadline
from service.governor import Priority
from service.observe import Outcome
from service.tasks.memory import MemoryTaskStore
from service.tasks.metrics import TaskMetrics
from service.tasks.model import Task
from service.tasks.tracing import current_traceparent
from service.tasks.worker import TaskWorker
from tests.support.metrics import points
from tests.support.tasks import queued_task as task


class Path:
    """The servicer's `_moderate`, answering from a script."""

    def __init__(self, *outcomes: Outcome) -> None:
        self.outcomes = list(outcomes)
        self.priorities: list[Priority] = []

    async def __call__(
        self, request: ModerateImageRequest, deadline: Deadline, priority: Priority
    ) -> Outcome:
        self.priorities.append(priority)
        return self.outcomes.pop(0)


def worker(store: MemoryTaskStore, path: Path, states: list[int], renew_every: float = 1.0) -> TaskWorker:
    return TaskWorker(
        store,
        path,
        concurrency=1,
        backend_timeout=15.0,
        renew_every=renew_every,
        tracer=trace.NoOpTracer(),
        on_state=states.append,
        on_doubt=lambda _: None,
        resend_in_doubt=False,
        outward=Scrubber(),
    )


async def test_a_task_runs_at_background_priority_and_its_outcome_is_saved_and_called_back() -> None:
    store, path = MemoryTaskStore(60), Path(ModerateImageResponse(data_id="a"))
    states: list[int] = []
    await store.add(task(), None)
    taken = await store.take_work(0)
    assert taken is not None
    await worker(store, path, states).run(taken)
    saved = await store.get("tsk_1_a")
    assert saved is not None
    assert saved.view.state == TaskState.TASK_STATE_SUCCEEDED
    assert saved.view.result.data_id == "a"
    assert saved.view.delivery.state == DeliveryState.DELIVERY_STATE_PENDING
    assert path.priorities == [Priority.BACKGROUND]
    assert states == [TaskState.TASK_STATE_RUNNING, TaskState.TASK_STATE_SUCCEEDED]
    assert await store.take_delivery(0) is saved


async def test_a_task_taken_again_after_its_outcome_was_saved_is_not_moderated_again() -> None:
    store, path = MemoryTaskStore(60), Path()
    states: list[int] = []
    done = task(state=TaskState.TASK_STATE_SUCCEEDED)
    await store.add(done, None)
    await worker(store, path, states).run(done)
    assert path.priorities == []  # nothing billed again
    assert await store.take_delivery(0) is done  # but its callback is still owed


async def test_a_throttled_task_asks_again_and_a_task_past_its_deadline_fails() -> None:
    throttled = errors.CallFailure(
        BackendError(Kind.THROTTLED, "no slot", retry_after=0.01), backend="tencent", attempts=0
    )
    store = MemoryTaskStore(60)
    states: list[int] = []
    path = Path(throttled, ModerateImageResponse(data_id="a"))
    waited = task()
    await worker(store, path, states).run(waited)
    assert waited.view.state == TaskState.TASK_STATE_SUCCEEDED
    assert len(path.priorities) == 2

    late, never = task(deadline_in=-1), Path()
    await worker(store, never, states).run(late)
    assert never.priorities == []
    assert late.view.state == TaskState.TASK_STATE_FAILED
    assert late.view.error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert "deadline" in late.view.error.message


class TakenOver(MemoryTaskStore):
    """A store whose tasks another replica has taken over: a renewal says so."""

    async def renew_work(self, task: Task) -> bool:
        return False


async def test_a_task_taken_over_by_another_replica_stops_before_its_next_call() -> None:
    throttled = errors.CallFailure(
        BackendError(Kind.THROTTLED, "no slot", retry_after=0.001), backend="tencent", attempts=0
    )
    store, path = TakenOver(60), Path(throttled, ModerateImageResponse(data_id="a"))
    held = task()
    await store.add(held, None)
    states: list[int] = []
    # Renewed at the worker's first pause, which finds the task taken over.
    await worker(store, path, states, renew_every=0.0).run(held)
    assert len(path.priorities) == 1  # not called again: the replica holding it now does that
    assert states == [TaskState.TASK_STATE_RUNNING]
    assert held.view.state == TaskState.TASK_STATE_RUNNING
    assert await store.take_delivery(0) is None


class SwallowingStore(MemoryTaskStore):
    """A store whose renewal, cancelled in flight, swallows the cancellation (as redis-py can)."""

    def __init__(self, retention: float) -> None:
        super().__init__(retention)
        self.renewing = asyncio.Event()

    async def renew_work(self, task: Task) -> bool:
        self.renewing.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            assert current is not None
            current.uncancel()
            raise ConnectionError("connection lost while reading") from None
        return True


async def test_a_task_ends_though_its_renewal_swallowed_the_cancellation() -> None:
    store = SwallowingStore(60)
    path = HeldPath(ModerateImageResponse(data_id="a"))
    held = task()
    await store.add(held, None)
    running = asyncio.create_task(worker(store, path, [], renew_every=0.0).run(held))
    await store.renewing.wait()  # a renewal in flight when the call's answer comes
    path.release.set()
    await asyncio.wait_for(running, timeout=5)  # the guard only keeps a failure from hanging
    assert held.view.state == TaskState.TASK_STATE_SUCCEEDED


class HeldPath(Path):
    """A path whose call waits until released."""

    def __init__(self, *outcomes: Outcome) -> None:
        super().__init__(*outcomes)
        self.called = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(
        self, request: ModerateImageRequest, deadline: Deadline, priority: Priority
    ) -> Outcome:
        self.called.set()
        await self.release.wait()
        return await super().__call__(request, deadline, priority)


async def test_a_task_handed_again_to_the_replica_working_on_it_is_left_to_its_worker() -> None:
    store, path = MemoryTaskStore(60), HeldPath(ModerateImageResponse(data_id="a"))
    held = task()
    await store.add(held, None)
    busy = worker(store, path, [])
    first = asyncio.create_task(busy.run(held))
    await path.called.wait()
    # Its lease ran out while Redis was slow: handed to this replica again, it is not run again (the
    # guard only keeps a failure from hanging: the second run would wait for the first's release).
    await asyncio.wait_for(busy.run(held), timeout=5)
    path.release.set()
    await first
    assert len(path.priorities) == 1
    assert held.view.state == TaskState.TASK_STATE_SUCCEEDED


async def test_the_work_links_to_the_submission_and_the_metrics_count_each_state() -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = provider.get_tracer("test")
    reader = InMemoryMetricReader()
    metrics = TaskMetrics(MeterProvider(metric_readers=[reader]).get_meter("test"))
    store = MemoryTaskStore(60)
    submitted = task()
    with tracer.start_as_current_span("SubmitModeration") as submission:
        submitted.traceparent = current_traceparent()
    await store.add(submitted, None)
    worker = TaskWorker(
        store,
        Path(ModerateImageResponse(data_id="a")),
        concurrency=1,
        backend_timeout=15.0,
        renew_every=1.0,
        tracer=tracer,
        on_state=metrics.state,
        on_doubt=metrics.in_doubt,
        resend_in_doubt=False,
        outward=Scrubber(),
    )
    await worker.run(submitted)
    (work,) = [s for s in spans.get_finished_spans() if s.name == "moderation.task"]
    assert [link.context.span_id for link in work.links] == [submission.get_span_context().span_id]
    assert work.context.trace_id != submission.get_span_context().trace_id  # a trace of its own
    assert points(reader, "moderation.tasks") == [
        ({"moderation.task_state": "running"}, 1),
        ({"moderation.task_state": "succeeded"}, 1),
    ]
