"""A task as the stores keep it, and what every store offers the worker, the deliverer and the RPCs."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Protocol

from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerationTask, TaskState

__all__ = [
    "Backlog",
    "Task",
    "TaskStore",
    "created_at_of",
    "dedup_key",
    "finished",
    "hashed_caller",
    "new_task_id",
]

ID_PREFIX = "tsk_"


def new_task_id(now: float) -> str:
    """`tsk_<creation ms, hex>_<random>`: unguessable, and it tells an expired task from an unknown one."""
    return f"{ID_PREFIX}{int(now * 1000):x}_{secrets.token_hex(12)}"


def created_at_of(task_id: str) -> float | None:
    """When the task named `task_id` was created (seconds since the epoch); None if it is no task id."""
    head, _, rest = task_id.removeprefix(ID_PREFIX).partition("_")
    if not task_id.startswith(ID_PREFIX) or not rest:
        return None
    try:
        return int(head, 16) / 1000
    except ValueError:
        return None


def hashed_caller(caller: str) -> str:
    """The caller as stores keep it: a name never reaches Redis."""
    return hashlib.sha256(caller.encode()).hexdigest()[:32]


def dedup_key(caller: str, idempotency_key: str, data_id: str) -> str | None:
    """What makes two submissions the same task: the key, else the caller's `data_id`; None: neither."""
    if idempotency_key:
        name = "key:" + idempotency_key
    elif data_id:
        name = "data:" + data_id
    else:
        return None
    return hashlib.sha256(f"{caller}\0{name}".encode()).hexdigest()


@dataclass
class Task:
    """`view` is what GetModerationTask answers and the callback carries; the rest is the work."""

    view: ModerationTask
    request: ModerateImageRequest
    callback_url: str
    caller: str  # hashed_caller() of the authenticated caller, whose callback policy applies ("": none)
    owner: str  # hashed_caller(): only its owner may read an authenticated caller's task
    deadline: float  # seconds since the epoch
    # The authenticated caller ("" without authentication), whom the work runs as: its quotas, its share
    # of the budget and its label in the logs and metrics, as its own calls'. Not a secret: logs name it.
    submitted_by: str = ""
    traceparent: str = ""  # the submission's span, which the work and the deliveries link to
    receipt: str = ""  # the store's handle on the task while it is taken (a Redis stream entry id)
    # The hashed account of the route it was submitted on (`service.tasks.accounts`): its namespace
    # in Redis, and the account it runs on.
    account: str = ""
    # The billed backend attempts sent for it so far, by any replica, and when the last was sent (seconds
    # since the epoch; None: none yet). Recorded just before each is sent (`TaskStore.record_sent`).
    attempts_sent: int = 0
    sent_at: float | None = None

    @property
    def task_id(self) -> str:
        return self.view.task_id


def finished(task: Task) -> bool:
    """Whether the task has its outcome (its image is no longer needed)."""
    return task.view.state in (TaskState.TASK_STATE_SUCCEEDED, TaskState.TASK_STATE_FAILED)


@dataclass(frozen=True)
class Backlog:
    pending: int
    oldest_age: float
    # Tasks queued under accounts this gateway does not serve: another deployment's sharing the Redis
    # database, or an account taken out of the routing while its tasks were pending.
    unserved: int = 0


class TaskStore(Protocol):
    """Tasks by id, the queue of work, and the schedule of deliveries.

    A task is taken (`take_work`, `take_delivery`) on a lease: if the taker dies, it is handed out again
    once the lease runs out. Results are saved before `finish_work`, so a task handed out again after
    its result was saved does not run again.
    """

    async def add(self, task: Task, dedup: str | None) -> Task:
        """Stores and queues `task`, or returns the task already stored under `dedup`."""
        ...

    async def get(self, task_id: str) -> Task | None:
        """The task, or None when it is unknown or past its retention."""
        ...

    async def save(self, task: Task) -> None:
        """Writes the task's view (state, outcome, delivery record) and renews its retention."""
        ...

    async def record_sent(self, task: Task, at: float) -> None:
        """A billed attempt of the task is about to be sent at `at`: counted and timed on the task, durably
        before it is sent (its answer, unlike the record, dies with the replica that sent it)."""
        ...

    async def take_work(self, wait: float) -> Task | None:
        """The next queued (or abandoned) task, within `wait` seconds."""
        ...

    async def renew_work(self, task: Task) -> bool:
        """Extends the lease of a task still being worked on; False when another taker has it now."""
        ...

    async def finish_work(self, task: Task) -> None: ...

    async def schedule_delivery(self, task: Task, at: float) -> None:
        """A delivery attempt of the task's callback is due at `at` (seconds since the epoch)."""
        ...

    async def take_delivery(self, wait: float) -> Task | None:
        """A task whose delivery is due, within `wait` seconds."""
        ...

    async def finish_delivery(self, task: Task) -> None:
        """No more attempts: delivered, stopped or given up."""
        ...

    async def backlog(self) -> Backlog: ...

    async def aclose(self) -> None: ...
