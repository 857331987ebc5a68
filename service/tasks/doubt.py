"""Tasks in doubt, decided here once: a task taken with a billed attempt recorded sent and no outcome saved.

Its replica stopped while that call was in flight. IMS billed the call (it bills a call its client gave
up on), and has no way to be asked for its answer again: sending the task again pays twice for one image.
So each billed attempt of a task is recorded in its store just before it is sent, and one that cannot be
recorded is not sent (the task waits and asks again, as for a rate slot). A task taken over in doubt is
not sent again, unless the operator chose to pay twice rather than lose the verdict
(`MODERATION_TASK_RESEND_IN_DOUBT`); an answer that needs no call (the verdict cache's, the policy's)
still comes, since only an attempt about to be billed is refused.
"""

from __future__ import annotations

import logging
import time

from backends.errors import BackendError, Kind
from common.cancellation import end_if_cancelled
from service.logs import RateLimitedLog
from service.tasks.model import Task, TaskStore, finished

__all__ = ["Sending", "in_doubt"]

log = logging.getLogger(__name__)

# A task whose attempt could not be recorded asks again after this long (or its rate slot's Retry-After).
UNRECORDED_PAUSE = 0.5
# One line per 30 s for the whole process: Redis away fails every task's record at once.
_UNRECORDED = RateLimitedLog(
    log, "a task's backend attempt not recorded, so not sent; asking again", interval=30.0
)


def in_doubt(task: Task) -> bool:
    """Whether a billed attempt of the task was sent by a replica whose outcome was never saved."""
    return task.attempts_sent > 0 and not finished(task)


class Sending:
    """The hook the retrier awaits before each billed attempt of one task run
    (`service.retry.BEFORE_BILLED_ATTEMPT`): records the attempt in the store before it goes, or refuses
    it (`BackendError`: OUTCOME_IN_DOUBT for a task in doubt, THROTTLED when the record failed)."""

    def __init__(self, store: TaskStore, task: Task, *, resend_in_doubt: bool) -> None:
        self._store = store
        self._task = task
        # As the task was taken, before this run records anything.
        self.in_doubt = in_doubt(task)
        self._refuse = self.in_doubt and not resend_in_doubt
        self._doubted_attempt, self._doubted_at = task.attempts_sent, task.sent_at or 0.0
        self.refused = False
        self.sent = 0

    async def __call__(self) -> None:
        if self._refuse:
            self.refused = True
            raise BackendError(Kind.OUTCOME_IN_DOUBT, self._doubt_message())
        try:
            await self._store.record_sent(self._task, time.time())
        except Exception as problem:
            end_if_cancelled()
            _UNRECORDED.record(error=type(problem).__name__)
            raise BackendError(
                Kind.THROTTLED,
                "not sent, nothing billed: the task store could not record the attempt before it was "
                f"sent; retry in {UNRECORDED_PAUSE:g} s",
                retry_after=UNRECORDED_PAUSE,
            ) from None
        self.sent += 1

    @property
    def ending(self) -> str:
        """What became of a task taken in doubt, as `moderation.task.in_doubt` counts it."""
        if self.refused:
            return "not_sent"
        return "sent_again" if self.sent else "not_needed"

    def _doubt_message(self) -> str:
        sent_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._doubted_at))
        return (
            f"the replica running this task stopped while its call (attempt {self._doubted_attempt}, sent "
            f"at {sent_at}) was in flight; that call may have been billed and its answer is lost, so it "
            "was not sent again: submit again with a new idempotency key to pay for another call"
        )
