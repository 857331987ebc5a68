"""The task loops end when closed, even over a store that turns their cancellation into an error."""

from __future__ import annotations

import asyncio

from service.tasks.loops import Loops


async def test_a_loop_ends_on_drain_though_its_store_turns_the_cancellation_into_an_error() -> None:
    async def take(wait: float) -> int | None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            # What redis-py can do with a command cancelled in flight.
            raise ConnectionError("connection lost while reading") from None
        return None

    async def handle(item: int) -> None:
        raise AssertionError("nothing was taken")

    loops: Loops[int] = Loops("test work", 2, take, handle)
    loops.start()
    await asyncio.sleep(0)
    await asyncio.wait_for(loops.drain(0.05), timeout=5)
