"""Polling for a condition that another task, thread or process makes true, instead of sleeping for
long enough: a test waits only as long as the condition takes, and a timeout says what never came."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")
# Often enough that a test waits little past the moment, rarely enough to leave the loop to the others.
EVERY = 0.02


@overload
async def eventually(
    check: Callable[[], Awaitable[T | None]], *, within: float = ..., every: float = ...
) -> T: ...
@overload
async def eventually(check: Callable[[], T | None], *, within: float = ..., every: float = ...) -> T: ...
async def eventually(check: Callable[[], Any], *, within: float = 10.0, every: float = EVERY) -> Any:
    """`check()`'s first true value (awaited when `check` is async); a false value or an AssertionError
    asks again every `every` seconds. After `within` seconds, the last AssertionError, or one naming
    `check`."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        reason: AssertionError | None = None
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
        except AssertionError as failed:
            reason = failed
        if asyncio.get_running_loop().time() >= deadline:
            raise reason or AssertionError(f"{_name(check)} still false after {within:g} s")
        await asyncio.sleep(every)


def eventually_blocking(check: Callable[[], T | None], *, within: float = 10.0, every: float = EVERY) -> T:
    """`eventually` for a test that runs no event loop: the thread sleeps between checks."""
    deadline = time.monotonic() + within
    while True:
        reason: AssertionError | None = None
        try:
            if value := check():
                return value
        except AssertionError as failed:
            reason = failed
        if time.monotonic() >= deadline:
            raise reason or AssertionError(f"{_name(check)} still false after {within:g} s")
        time.sleep(every)


def _name(check: Callable[..., object]) -> str:
    return getattr(check, "__qualname__", repr(check))
