"""What the tasks' process tests share: a loopback callback receiver that records every request, answers
as told per path and can go down and come back on its own port; a gateway process; submitting a task
and waiting for it to settle; a task as a store holds it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import json_format
from moderation.v1.moderation_service_pb2 import (
    DeliveryState,
    GetModerationTaskRequest,
    ModerateImageRequest,
    ModerationTask,
    SubmitModerationRequest,
    SubmitModerationResponse,
    TaskState,
)
from moderation.v1.moderation_service_pb2_grpc import ModerationServiceStub

from emulator import ImsEmulator
from emulator.images import make_png
from service.tasks.model import Task
from testbed.client import open_channel
from testbed.processes import free_port
from tests.support.service_process import start_service, wait_serving

# Test secrets: Standard Webhooks' own format, `whsec_` + base64 of 24 bytes.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_c2VjcmV0LWJlZm9yZS10aGUtcm90YXRpb24="

IMAGE = make_png(64, 64)
# When `queued_task`'s last attempt was sent: 2026-11-30T00:53:20Z.
SENT_AT = 1_796_000_000.0
# Attempts 0.3 s apart, jittered: a receiver down for a second or two is reached again within the test.
SCHEDULE = "0 0.3 0.3 0.3 0.5 0.5 0.5 1 1 1"
TASK_SETTINGS = {
    "MODERATION_WEBHOOK_SECRETS": f"{SECRET} {OLD_SECRET}",
    "MODERATION_CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8",
    "MODERATION_CALLBACK_ALLOW_HTTP": "on",
    "MODERATION_CALLBACK_RETRY_SCHEDULE": SCHEDULE,
}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    # path -> (status, extra headers); unknown paths answer 200.
    answers: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def by_path(self) -> dict[str, list[Received]]:
        grouped: dict[str, list[Received]] = defaultdict(list)
        for request in self.received:
            grouped[request.path].append(request)
        return grouped

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, count: int, *, path: str | None = None, within: float = 30.0) -> None:
        """Until `count` requests (to `path`, if given) arrived."""
        await self._wait(lambda: sum(path is None or r.path == path for r in self.received) >= count, within)

    async def wait_for_tasks(self, task_ids: list[str], *, within: float = 60.0) -> None:
        """Until a callback of each task arrived."""
        await self._wait(lambda: {r.headers["webhook-id"] for r in self.received} >= set(task_ids), within)

    async def _wait(self, done: Callable[[], bool], within: float) -> None:
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(done)

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append(Received(request.path, dict(request.headers), await request.read()))
        async with self._arrived:
            self._arrived.notify_all()
        status, headers = self.answers.get(request.path, (200, {}))
        return web.Response(status=status, headers=headers)


@contextlib.asynccontextmanager
async def listening() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@contextlib.contextmanager
def gateway_process(emulator: ImsEmulator, **settings: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    process = start_service(emulator, port, MODERATION_LOG_FORMAT="text", **settings)

    async def serving() -> None:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            await wait_serving(channel)

    try:
        # A loop of its own, on a thread: the module's fixture and a test's own loop both use this.
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, serving()).result()
        yield process, f"127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)


async def submit(
    stub: ModerationServiceStub,
    data_id: str,
    callback_url: str = "",
    key: str = "",
    metadata: tuple[tuple[str, str], ...] = (),
) -> str:
    answer: SubmitModerationResponse = await stub.SubmitModeration(
        SubmitModerationRequest(
            request=ModerateImageRequest(content=IMAGE, data_id=data_id),
            callback_url=callback_url,
            idempotency_key=key,
        ),
        timeout=10,
        metadata=metadata,
    )
    return answer.task_id


async def settled(
    stub: ModerationServiceStub,
    task_id: str,
    *,
    within: float = 20.0,
    metadata: tuple[tuple[str, str], ...] = (),
) -> ModerationTask:
    """The task once its delivery (or, without a callback, its work) is over."""
    async with asyncio.timeout(within):
        while True:
            task: ModerationTask = await stub.GetModerationTask(
                GetModerationTaskRequest(task_id=task_id), timeout=5, metadata=metadata
            )
            if task.delivery.state not in (
                DeliveryState.DELIVERY_STATE_PENDING,
                DeliveryState.DELIVERY_STATE_UNSPECIFIED,
            ) and task.state in (TaskState.TASK_STATE_SUCCEEDED, TaskState.TASK_STATE_FAILED):
                return task
            await asyncio.sleep(0.05)


async def attempted(stub: ModerationServiceStub, task_id: str, attempts: int) -> None:
    """Until the task's callback was attempted `attempts` times (the gateway's record, polled)."""
    async with asyncio.timeout(10):
        while True:
            task = await stub.GetModerationTask(GetModerationTaskRequest(task_id=task_id), timeout=5)
            if task.delivery.attempts >= attempts:
                return
            await asyncio.sleep(0.05)


async def expiry(stub: ModerationServiceStub, task_id: str) -> grpc.aio.AioRpcError:
    """The error GetModerationTask answers once the task is gone (polled)."""
    async with asyncio.timeout(10):
        while True:
            try:
                await stub.GetModerationTask(GetModerationTaskRequest(task_id=task_id), timeout=5)
            except grpc.aio.AioRpcError as gone:
                return gone
            await asyncio.sleep(0.1)


def data_of(task: ModerationTask) -> dict[str, object]:
    return json_format.MessageToDict(task.result, always_print_fields_with_no_presence=True)


def queued_task(
    *, deadline_in: float = 60.0, state: int = TaskState.TASK_STATE_PENDING, sent: int = 0
) -> Task:
    """A task as a store holds it, for the worker's unit tests: `sent` billed attempts recorded sent (the
    last at a fixed time), its callback to an example URL."""
    return Task(
        view=ModerationTask(task_id="tsk_1_a", state=state),  # type: ignore[arg-type]
        request=ModerateImageRequest(data_id="a"),
        callback_url="https://example.com/hook",
        caller="",
        owner="o",
        deadline=time.time() + deadline_in,
        attempts_sent=sent,
        sent_at=SENT_AT if sent else None,
    )
