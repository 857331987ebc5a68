"""The tests' poller: it returns the first true answer and, out of time, says what never came."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.eventually import eventually, eventually_blocking


def checker(*values: object) -> tuple[list[int], Callable[[], object]]:
    """A check giving `values` in turn (then the last again), raising those that are AssertionErrors;
    and the list of its calls."""
    calls: list[int] = []

    def check() -> object:
        calls.append(len(calls))
        value = values[min(len(calls), len(values)) - 1]
        if isinstance(value, AssertionError):
            raise value
        return value

    return calls, check


async def test_the_first_true_value_is_returned_after_false_values_and_failed_assertions() -> None:
    calls, check = checker(0, AssertionError("not yet"), [], "done", "later")
    assert await eventually(check, every=0) == "done"
    assert len(calls) == 4


async def test_an_async_check_is_awaited() -> None:
    state = {"left": 3}

    async def check() -> int:
        state["left"] -= 1
        return 7 if state["left"] == 0 else 0

    assert await eventually(check, every=0) == 7


async def test_out_of_time_the_last_assertion_is_raised() -> None:
    _, check = checker(AssertionError("the count is 2, not 3"))
    with pytest.raises(AssertionError, match="the count is 2, not 3"):
        await eventually(check, within=0)


async def test_out_of_time_a_false_check_is_named() -> None:
    def replica_knows_of_two() -> bool:
        return False

    with pytest.raises(AssertionError, match="replica_knows_of_two still false after 0 s"):
        await eventually(replica_knows_of_two, within=0)


def test_the_blocking_poller_keeps_the_same_promise() -> None:
    calls, check = checker(None, AssertionError("not yet"), 5)
    assert eventually_blocking(check, every=0) == 5
    assert len(calls) == 3
    _, never = checker(AssertionError("never"))
    with pytest.raises(AssertionError, match="never"):
        eventually_blocking(never, within=0)
