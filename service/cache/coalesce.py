"""In-process coalescing: concurrent callers with one key share one call.

The shared call runs in a task of its own, shielded from each caller's cancellation: a caller that
leaves (cancelled, or out of time) leaves the call running for the others, and the call is cancelled
only when its last caller has left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

T = TypeVar("T")


class _RunningCall(Generic[T]):
    def __init__(self, task: asyncio.Task[T]) -> None:
        self.task = task
        self.callers = 0


class Coalescer(Generic[T]):
    def __init__(self) -> None:
        self._calls: dict[str, _RunningCall[T]] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def running(self, key: str) -> bool:
        """Whether a caller of `run(key, ...)` now would join a call already running."""
        return key in self._calls

    async def run(self, key: str, call: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """`call()`'s result, and whether this caller joined a call another one started."""
        shared = self._calls.get(key)
        joined = shared is not None
        if shared is None:
            shared = _RunningCall(asyncio.ensure_future(call()))
            self._calls[key] = shared
            shared.task.add_done_callback(lambda _: self._forget(key, shared))
        shared.callers += 1
        try:
            return await asyncio.shield(shared.task), joined
        finally:
            shared.callers -= 1
            if shared.callers == 0 and not shared.task.done():
                # Nobody waits for it any more; a caller arriving now starts a call of its own.
                self._forget(key, shared)
                shared.task.cancel()

    def _forget(self, key: str, shared: _RunningCall[T]) -> None:
        if self._calls.get(key) is shared:
            del self._calls[key]
