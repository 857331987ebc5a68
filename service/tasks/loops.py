"""The worker's and the deliverer's loops: each takes an item from its store and handles it, until
drained. A store that fails (Redis away) is asked again; what it held stays there."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from common.cancellation import end_if_cancelled
from service.logs import RateLimitedLog

__all__ = ["Loops"]

log = logging.getLogger(__name__)

Item = TypeVar("Item")
# How long a loop waits for an item before looking again (and at draining).
POLL = 1.0


class Loops(Generic[Item]):
    def __init__(
        self,
        what: str,
        count: int,
        take: Callable[[float], Awaitable[Item | None]],
        handle: Callable[[Item], Awaitable[None]],
    ) -> None:
        # One line per 30 s, not a traceback per item: Redis away fails every item at once, and a
        # process whose output is not read blocks once the pipe is full.
        self._failures = RateLimitedLog(log, f"{what} failed; trying again", interval=30.0)
        self._count = count
        self._take = take
        self._handle = handle
        self._stopping = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        # Loops waiting for an item to appear: a drain ends them at once instead of after a poll.
        self._idle: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        self._loops = [asyncio.create_task(self._loop()) for _ in range(self._count)]

    async def drain(self, timeout: float) -> None:
        """The items available now are handled within `timeout`; then the loops end."""
        self._stopping.set()
        for idle in self._idle:
            idle.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*self._loops, return_exceptions=True)
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)

    async def _next(self) -> Item | None:
        if self._stopping.is_set():
            return await self._take(0.0)
        current = asyncio.current_task()
        assert current is not None
        self._idle.add(current)
        try:
            return await self._take(POLL)
        finally:
            self._idle.discard(current)

    async def _loop(self) -> None:
        while True:
            try:
                item = await self._next()
                if item is None:
                    if self._stopping.is_set():
                        return
                    continue
                await self._handle(item)
            except asyncio.CancelledError:
                raise
            except Exception as failure:
                end_if_cancelled()
                self._failures.record(error=type(failure).__name__)
                await asyncio.sleep(POLL)
