"""Watching something while a phase runs: a poll now, every interval until the block ends, and a last one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable


@contextlib.asynccontextmanager
async def polled(poll: Callable[[], Awaitable[object]], interval: float) -> AsyncIterator[None]:
    """Awaits `poll()` at once, every `interval` seconds while the block runs, and once more as it ends:
    what changed between the last two polls is seen too."""
    await poll()

    async def keep_polling() -> None:
        while True:
            await asyncio.sleep(interval)
            await poll()

    polling = asyncio.create_task(keep_polling())
    try:
        yield
    finally:
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        await poll()
