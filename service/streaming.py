"""Bounded, cancellable concurrency for the streaming RPCs.

The next item is read only when the stream has a free slot (a count, and a byte budget for the
images in flight) and the server-wide limit has one too, and taken in once the intake (what the rate
budget can serve soon, `service.intake`) has room; all are released once the item's answer has been
handed to gRPC. Memory is therefore bounded by the window, not the stream length, and a fast
client is held back by HTTP/2 flow control. Every item read gets exactly one answer, since `answer`
never raises. Cancelling the stream (client cancel, deadline) cancels every in-flight item through the
task group.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

from moderation.v1.moderation_service_pb2 import ModerateImageRequest

Answer = TypeVar("Answer")


class Slot(Protocol):
    """Room for one item: an `asyncio.Semaphore`, or the intake's (`service.intake`)."""

    async def acquire(self) -> object: ...

    def release(self) -> None: ...


@dataclass(frozen=True)
class Item:
    index: int
    correlation_id: str
    request: ModerateImageRequest
    # When the stream read it, on the event loop's clock: its time budget starts here.
    received_at: float | None = None

    @property
    def size(self) -> int:
        return self.request.ByteSize()


@dataclass(frozen=True)
class Window:
    """How far one stream may read ahead of its answers."""

    max_items: int
    max_bytes: int


class _Budget:
    """A stream's in-flight items and bytes; the reader waits until both have room."""

    def __init__(self, window: Window) -> None:
        self._window = window
        self._items = 0
        self._bytes = 0
        self._changed = asyncio.Condition()

    async def wait_for_room(self) -> None:
        async with self._changed:
            await self._changed.wait_for(
                lambda: self._items < self._window.max_items and self._bytes < self._window.max_bytes
            )
            self._items += 1

    def add_bytes(self, size: int) -> None:
        self._bytes += size

    async def release(self, size: int) -> None:
        async with self._changed:
            self._items -= 1
            self._bytes -= size
            self._changed.notify_all()


class _Done(Generic[Answer]):
    def __init__(self, item: Item, answer: Answer) -> None:
        self.item = item
        self.answer = answer


_END_OF_INPUT = object()


class ReadingStopped(Exception):
    """The stream stopped reading before its input ended; every item read has been answered."""

    def __init__(self, reason: str, items_read: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.items_read = items_read


DRAINING = "draining"
IDLE = "idle"


async def answer_concurrently(
    items: AsyncIterator[Item],
    answer: Callable[[Item], Awaitable[Answer]],
    *,
    window: Window,
    server_slots: asyncio.Semaphore,
    caller_slots: asyncio.Semaphore | None = None,
    intake: Slot | None = None,
    stop_reading: asyncio.Event | None = None,
    idle_timeout: float | None = None,
) -> AsyncIterator[tuple[Item, Answer]]:
    """Yields `(item, answer)` for every item read, in completion order.

    Each item read holds one of `caller_slots` (its caller's bulkhead, across the caller's streams),
    one of `server_slots`, and room in the `intake` (what the rate budget can serve soon); the caller's is
    taken first, so a caller at its limit waits without holding a slot the other callers could use. A
    stream reads no further while its item waits for the intake, so the client waits in its flow-control
    window, and the item's time budget starts only once it is taken in.

    Reading stops early when `stop_reading` is set (the server is draining) or when the client sends
    nothing for `idle_timeout` seconds while no item is in flight; the items read are still answered,
    then `ReadingStopped` is raised so the caller can end the stream with a clear status.
    """
    budget = _Budget(window)
    finished: asyncio.Queue[_Done[Answer] | object] = asyncio.Queue()
    unanswered = 0
    items_read = 0
    stopped: str | None = None
    stop = stop_reading or asyncio.Event()

    # Taken before reading; the intake's room once the item is read, so that an idle stream holds none.
    before_reading: list[Slot] = [slot for slot in (caller_slots, server_slots) if slot is not None]
    slots: list[Slot] = [*before_reading, *([intake] if intake is not None else [])]

    async def acquire_slots() -> None:
        for taken, slot in enumerate(before_reading):
            try:
                await slot.acquire()
            except BaseException:
                release_slots(before_reading[:taken])
                raise

    def release_slots(held: list[Slot] = slots) -> None:
        for slot in held:
            slot.release()

    async def work(item: Item) -> None:
        try:
            finished.put_nowait(_Done(item, await answer(item)))
        finally:
            release_slots()

    async def next_item() -> Item | str | None:
        """The next item, None at the end of input, or why reading stops."""
        reading = asyncio.ensure_future(anext(items))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                done, _ = await asyncio.wait(
                    {reading, stopping}, timeout=idle_timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if reading in done:
                    try:
                        return reading.result()
                    except StopAsyncIteration:
                        return None
                if stopping in done:
                    return DRAINING
                if not done and unanswered == 0:
                    # Quiet with nothing in flight: the client holds the stream without using it.
                    return IDLE
        finally:
            for future in (reading, stopping):
                future.cancel()

    async def read(group: asyncio.TaskGroup) -> None:
        nonlocal unanswered, items_read, stopped
        try:
            while True:
                await budget.wait_for_room()
                await acquire_slots()
                try:
                    item = await next_item()
                    if isinstance(item, Item) and intake is not None:
                        # The stream reads no further meanwhile, and the item's clock has not started.
                        await intake.acquire()
                except BaseException:
                    # A stream cancelled while waiting for its next item gives its slots back.
                    release_slots(before_reading)
                    raise
                if not isinstance(item, Item):
                    release_slots(before_reading)
                    await budget.release(0)
                    stopped = item
                    return
                item = replace(item, received_at=asyncio.get_running_loop().time())
                unanswered += 1
                items_read += 1
                budget.add_bytes(item.size)
                group.create_task(work(item))
        finally:
            finished.put_nowait(_END_OF_INPUT)

    async with asyncio.TaskGroup() as group:
        group.create_task(read(group))
        reading = True
        while reading or unanswered:
            done = await finished.get()
            if done is _END_OF_INPUT:
                reading = False
                continue
            assert isinstance(done, _Done)
            yield done.item, done.answer
            unanswered -= 1
            await budget.release(done.item.size)
    if stopped is not None:
        raise ReadingStopped(stopped, items_read)


async def aiter_items(items: list[Item]) -> AsyncIterator[Item]:
    for item in items:
        yield item
