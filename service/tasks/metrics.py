"""The tasks' metrics.

Prometheus names: `moderation_tasks_total` (tasks entering each state, by `moderation_task_state`),
`moderation_task_queue_depth` (tasks queued or being worked on), `moderation_task_oldest_pending_seconds`
(the oldest queued task's age), `moderation_task_unserved_queue_depth` (tasks queued under accounts
this gateway is not configured with), `moderation_task_callback_attempts_total` (by `moderation_outcome`)
and `moderation_task_in_doubt_total` (tasks taken over from a replica that stopped with their billed
call in flight, by `moderation_outcome`: what became of them).
"""

from __future__ import annotations

from collections.abc import Iterable

from moderation.v1.moderation_service_pb2 import TaskState
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from service.tasks.model import Backlog

__all__ = ["TaskMetrics"]


class TaskMetrics:
    def __init__(self, meter: metrics.Meter) -> None:
        # The store's backlog as last polled: gauges are read synchronously, the store is not.
        self.backlog = Backlog(0, 0.0)
        self._states = meter.create_counter(
            "moderation.tasks",
            unit="{task}",
            description="Asynchronous tasks entering each state (pending on submission, running, "
            "succeeded, failed)",
        )
        meter.create_observable_gauge(
            "moderation.task.queue_depth",
            callbacks=[self._observe_depth],
            unit="{task}",
            description="Asynchronous tasks queued or being worked on (fleet-wide in fleet mode)",
        )
        meter.create_observable_gauge(
            "moderation.task.oldest_pending",
            callbacks=[self._observe_oldest],
            unit="s",
            description="The age of the oldest task queued or being worked on",
        )
        meter.create_observable_gauge(
            "moderation.task.unserved_queue_depth",
            callbacks=[self._observe_unserved],
            unit="{task}",
            description="Asynchronous tasks queued in Redis under IMS accounts this gateway is not "
            "configured with (another deployment's, or an account taken out of the routing): "
            "only a gateway configured with their account runs them",
        )
        self._attempts = meter.create_counter(
            "moderation.task.callback_attempts",
            unit="{attempt}",
            description="Callback delivery attempts, by outcome",
        )
        self._in_doubt = meter.create_counter(
            "moderation.task.in_doubt",
            unit="{task}",
            description="Asynchronous tasks taken over from a replica that stopped while their billed "
            "backend call was in flight (the call may have been billed, its answer is lost), by what "
            "became of them: not sent again and failed, sent again (MODERATION_TASK_RESEND_IN_DOUBT), or "
            "not needing a call (the verdict cache or the policy answered)",
        )

    def in_doubt(self, ending: str) -> None:
        self._in_doubt.add(1, {"moderation.outcome": ending})

    def state(self, state: int) -> None:
        name = TaskState.Name(state).removeprefix("TASK_STATE_").lower()  # type: ignore[arg-type]
        self._states.add(1, {"moderation.task_state": name})

    def attempt(self, outcome: str) -> None:
        self._attempts.add(1, {"moderation.outcome": outcome})

    def _observe_depth(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.backlog.pending)]

    def _observe_oldest(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.backlog.oldest_age)]

    def _observe_unserved(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.backlog.unserved)]
