"""A task asked to stop stops, whatever the code it was waiting in made of its cancellation.

redis-py can turn the cancellation of a command in flight into an error of its own (a lost connection).
Code that catches errors around a Redis call to degrade (a store away, a beat missed) would then swallow
the cancellation too, and a loop that goes on would never end: a gateway that never exits on SIGTERM.
"""

from __future__ import annotations

import asyncio

__all__ = ["end_if_cancelled"]


def end_if_cancelled() -> None:
    """Raises CancelledError when the current task has been asked to stop (call it where an error is
    caught around an await, after any `asyncio.timeout` block has exited)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
