"""Builds the tasks' parts from the settings: the store (Redis in fleet mode, else this process), the
worker, the deliverer and the RPC object; starts them with the gateway and drains them on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from moderation.v1.moderation_service_pb2 import ModerateImageRequest, TaskState
from opentelemetry import metrics, trace

from common.cancellation import end_if_cancelled
from common.scrub import Scrubber
from service.governor.connect import redis_client
from service.logs import RateLimitedLog
from service.routing import Router
from service.settings import Settings
from service.tasks.accounts import TaskAccounts
from service.tasks.callers import CallbackPolicies, load_callers
from service.tasks.delivery import Deliverer
from service.tasks.egress import CallbackEgress
from service.tasks.memory import MemoryTaskStore
from service.tasks.metrics import TaskMetrics
from service.tasks.model import TaskStore
from service.tasks.redis_store import RedisTaskStore
from service.tasks.rpc import TaskRpc
from service.tasks.signing import SecretSource, parse_secrets
from service.tasks.worker import Moderate, TaskWorker

__all__ = ["Tasks", "build_tasks"]

log = logging.getLogger(__name__)
# Connections to Redis the task store holds at most; more commands at once wait for one (a burst of
# submissions must not open a connection each).
REDIS_CONNECTIONS = 32
# A task being worked on has its lease renewed this many times per lease: a renewal or two may fail
# (Redis slow, or briefly away) before another replica takes the task over.
RENEWALS_PER_LEASE = 3
# How often the backlog gauges are refreshed from the store.
BACKLOG_INTERVAL = 2.0


class Tasks:
    def __init__(
        self, store: TaskStore, rpc: TaskRpc, worker: TaskWorker, deliverer: Deliverer, metrics: TaskMetrics
    ) -> None:
        self.store = store
        self.rpc = rpc
        self._worker = worker
        self._deliverer = deliverer
        self._metrics = metrics
        self._backlog: asyncio.Task[None] | None = None
        self._unread = RateLimitedLog(log, "task backlog not read", interval=30.0)
        self._unserved = RateLimitedLog(
            log,
            "tasks are queued under IMS accounts this gateway is not configured with (another deployment's "
            "sharing this Redis, or an account taken out of the routing): they run only on a gateway "
            "configured with their account",
            interval=300.0,
        )

    def start(self) -> None:
        self._worker.start()
        self._deliverer.start()
        self._backlog = asyncio.create_task(self._watch_backlog())

    async def drain(self, grace: float) -> None:
        """Within `grace` seconds: the queued tasks worked off, then their callbacks due now attempted."""
        loop = asyncio.get_running_loop()
        until = loop.time() + grace
        await self._worker.drain(grace)
        await self._deliverer.drain(max(0.0, until - loop.time()))
        if self._backlog is not None:
            self._backlog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._backlog
        await self.store.aclose()

    async def _watch_backlog(self) -> None:
        while True:
            try:
                self._metrics.backlog = await self.store.backlog()
                if self._metrics.backlog.unserved:
                    self._unserved.record(tasks=self._metrics.backlog.unserved)
            except Exception as problem:
                end_if_cancelled()
                self._unread.record(error=type(problem).__name__)
            await asyncio.sleep(BACKLOG_INTERVAL)


def build_tasks(
    settings: Settings,
    router: Router,
    moderate: Moderate,
    validate: Callable[[ModerateImageRequest], Awaitable[None]],
    meter: metrics.Meter,
    tracer: trace.Tracer,
    outward: Scrubber,
) -> Tasks:
    """`router`: whose routes' accounts the tasks belong to. `outward`: the gateway's scrubber, which
    every status a task stores (and a callback carries) passes."""
    accounts = TaskAccounts(router)
    store: TaskStore
    if settings.redis_url is not None:
        password = settings.redis_password.get_secret_value() if settings.redis_password else None
        client = redis_client(
            settings.redis_url.get_secret_value(),
            password=password,
            ca_file=settings.redis_ca_file,
            max_connections=REDIS_CONNECTIONS,
        )
        store = RedisTaskStore(
            client, accounts=accounts.served, retention=settings.task_retention, lease=settings.task_lease
        )
    else:
        store = MemoryTaskStore(settings.task_retention)
    secrets = settings.webhook_secrets.get_secret_value() if settings.webhook_secrets else ""
    networks, allow_http = settings.callback_allowed_networks, settings.callback_allow_http
    policies = CallbackPolicies(
        SecretSource(parse_secrets(secrets), settings.webhook_secrets_file),
        CallbackEgress(allowed_networks=networks, allow_http=allow_http),
        allowed_networks=networks,
        allow_http=allow_http,
        callers=load_callers(settings.callback_callers_file) if settings.callback_callers_file else {},
    )
    task_metrics = TaskMetrics(meter)
    rpc = TaskRpc(
        store,
        policies,
        validate=validate,
        account_of=accounts.of,
        deadline=settings.task_deadline,
        retention=settings.task_retention,
        on_submitted=lambda: task_metrics.state(TaskState.TASK_STATE_PENDING),
        outward=outward,
    )
    worker = TaskWorker(
        store,
        moderate,
        concurrency=settings.task_workers,
        backend_timeout=settings.backend_timeout,
        renew_every=settings.task_lease / RENEWALS_PER_LEASE,
        tracer=tracer,
        on_state=task_metrics.state,
        on_doubt=task_metrics.in_doubt,
        resend_in_doubt=settings.task_resend_in_doubt,
        outward=outward,
    )
    deliverer = Deliverer(
        store,
        policies,
        schedule=settings.callback_retry_schedule,
        concurrency=settings.callback_workers,
        tracer=tracer,
        on_attempt=task_metrics.attempt,
    )
    return Tasks(store, rpc, worker, deliverer, task_metrics)
