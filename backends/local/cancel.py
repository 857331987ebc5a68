"""How an analysis running in a worker thread learns that nobody awaits its answer any more."""

from __future__ import annotations

import threading
import time

__all__ = ["CancelToken", "Cancelled"]


class Cancelled(Exception):
    """The call's deadline passed, or the call was cancelled: the analysis stops."""


class CancelToken:
    """A call's deadline (on `time.monotonic`) plus an Event the awaiting side sets when it gives up."""

    def __init__(self, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set() or time.monotonic() >= self.deadline

    def check(self) -> None:
        """Raise `Cancelled` if the work should stop; called between units of work (frames)."""
        if self.cancelled:
            raise Cancelled
