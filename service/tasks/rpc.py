"""`SubmitModeration` and `GetModerationTask`: validate, store, answer at once; read a task back."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status
from moderation.v1.moderation_service_pb2 import (
    DeliveryState,
    GetModerationTaskRequest,
    ModerateImageRequest,
    ModerationTask,
    SubmitModerationRequest,
    SubmitModerationResponse,
    TaskState,
)

from backends.calls import CALLER
from common.scrub import Scrubber
from service import errors
from service.admission import caller_key
from service.tasks import statuses
from service.tasks.callers import CallbackPolicies
from service.tasks.model import Task, TaskStore, created_at_of, dedup_key, hashed_caller, new_task_id
from service.tasks.tracing import current_traceparent
from service.validation import FieldViolation, ValidationError

__all__ = ["TaskRpc"]

IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# A task id is `tsk_` + about 40 characters; anything much longer is no id of ours.
MAX_TASK_ID_CHARS = 100


class TaskRpc:
    def __init__(
        self,
        store: TaskStore,
        policies: CallbackPolicies,
        *,
        validate: Callable[[ModerateImageRequest], Awaitable[None]],
        account_of: Callable[[ModerateImageRequest], str],
        deadline: float,
        retention: float,
        on_submitted: Callable[[], None],
        outward: Scrubber,
    ) -> None:
        self._outward = outward
        self._store = store
        self._policies = policies
        self._validate = validate
        self._account_of = account_of
        self._deadline = deadline
        self._retention = retention
        self._on_submitted = on_submitted

    async def submit(
        self, request: SubmitModerationRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> SubmitModerationResponse:
        violations = await self._violations(request)
        if violations:
            await _abort(context, errors.failure_status(ValidationError(violations), self._outward))
        now = time.time()
        caller = caller_key(context)
        view = ModerationTask(task_id=new_task_id(now), state=TaskState.TASK_STATE_PENDING)
        view.created_at.FromNanoseconds(int(now * 1e9))
        view.deadline.FromNanoseconds(int((now + self._deadline) * 1e9))
        view.delivery.state = (
            DeliveryState.DELIVERY_STATE_PENDING
            if request.callback_url
            else DeliveryState.DELIVERY_STATE_NONE
        )
        task = Task(
            view=view,
            request=request.request,
            callback_url=request.callback_url,
            caller=_policy_caller(),
            owner=hashed_caller(caller),
            deadline=now + self._deadline,
            traceparent=current_traceparent(),
            account=self._account_of(request.request),
            submitted_by=CALLER.get(),
        )
        dedup = dedup_key(caller, request.idempotency_key, request.request.data_id)
        try:
            stored = await self._store.add(task, dedup)
        except Exception:
            await _abort(context, statuses.store_unavailable())
        if stored is task:
            self._on_submitted()
        return SubmitModerationResponse(task_id=stored.task_id)

    async def get(
        self, request: GetModerationTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ModerationTask:
        task_id = request.task_id
        if not task_id or len(task_id) > MAX_TASK_ID_CHARS:
            violation = FieldViolation(
                "task_id", "give the task_id SubmitModeration answered", "TASK_ID_INVALID"
            )
            await _abort(context, errors.failure_status(ValidationError([violation]), self._outward))
        try:
            task = await self._store.get(task_id)
        except Exception:
            await _abort(context, statuses.store_unavailable())
        # An authenticated caller's tasks are its own; without authentication the id is the capability.
        if task is None or (task.caller and task.owner != hashed_caller(caller_key(context))):
            await _abort(context, self._not_found(task_id))
        return task.view

    async def _violations(self, request: SubmitModerationRequest) -> list[FieldViolation]:
        violations = []
        try:
            await self._validate(request.request)
        except ValidationError as invalid:
            violations += [
                FieldViolation(f"request.{v.field}", v.description, v.reason) for v in invalid.violations
            ]
        if request.callback_url:
            caller = _policy_caller()
            problem = self._policies.egress(caller).problem(request.callback_url)
            if problem is None and not self._policies.secrets(caller).signs:
                problem = "this gateway has no webhook secrets to sign callbacks with; poll GetModerationTask"
            if problem is not None:
                violations.append(FieldViolation("callback_url", problem, "CALLBACK_URL_REFUSED"))
        if request.idempotency_key and not IDEMPOTENCY_KEY.fullmatch(request.idempotency_key):
            violations.append(
                FieldViolation("idempotency_key", "at most 64 of [A-Za-z0-9_.:-]", "IDEMPOTENCY_KEY_INVALID")
            )
        return violations

    def _not_found(self, task_id: str) -> status_pb2.Status:
        created = created_at_of(task_id)
        if created is not None and created + self._retention < time.time():
            return statuses.expired(self._retention)
        return statuses.not_found()


def _policy_caller() -> str:
    """Whose callback policy applies: the authenticated caller, hashed; "" without authentication."""
    caller = CALLER.get()
    return hashed_caller(caller) if caller else ""


async def _abort(context: grpc.aio.ServicerContext[Any, Any], status: status_pb2.Status) -> NoReturn:
    rich = rpc_status.to_status(status)
    await context.abort(rich.code, rich.details, rich.trailing_metadata)
    raise AssertionError("grpc's context.abort() always raises")
