"""Work run in daemon threads, so a busy analysis can never keep the process alive after shutdown.

(A ThreadPoolExecutor's threads are joined at interpreter exit, whatever they are doing.) Jobs beyond
the threads queue here; the local backend admits no more than it has threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import queue
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["DaemonPool", "release_free_memory"]

T = TypeVar("T")


class DaemonPool:
    """A fixed set of daemon threads, kept between calls (the models' per-thread state stays warm)."""

    def __init__(self, workers: int) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        for number in range(workers):
            threading.Thread(target=self._serve, name=f"local-moderation-{number}", daemon=True).start()

    def _serve(self) -> None:
        while True:
            self._jobs.get()()

    def run(self, work: Callable[[], T], *, on_exit: Callable[[], None]) -> asyncio.Future[T]:
        """`work()` in one of the threads; `on_exit` runs on the event loop once the thread is done
        with it, whether or not anyone still awaits the future."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: T | None, error: BaseException | None) -> None:
            on_exit()
            if future.done():  # the awaiting call gave up
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        def job() -> None:
            result: T | None = None
            error: BaseException | None = None
            try:
                result = work()
            except BaseException as exc:  # handed to the awaiting coroutine
                error = exc
            # A closed loop: the process is shutting down and nobody awaits this.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result, error)

        self._jobs.put(job)
        return future


def _malloc_trim() -> Callable[[], object] | None:
    library = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(library), "malloc_trim", None) if library else None
    if trim is None:  # not glibc
        return None
    return lambda: trim(0)


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS. glibc keeps the memory of large freed decodes in its
    arenas (RSS stays at the peak for minutes otherwise); elsewhere this does nothing."""
    if _TRIM is not None:
        _TRIM()
