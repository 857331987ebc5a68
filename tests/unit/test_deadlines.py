"""A call's budget: the caller's deadline or the backend cap, whichever ends first, minus a margin."""

from __future__ import annotations

import asyncio

import pytest

from service.deadlines import RESPONSE_MARGIN, Deadline


async def test_without_a_caller_deadline_the_cap_ends_the_budget_a_margin_early() -> None:
    now = asyncio.get_running_loop().time()
    deadline = Deadline.for_call(None, cap=15.0)
    assert deadline.expires_at == pytest.approx(now + 15.0 - RESPONSE_MARGIN, abs=0.005)
    assert not deadline.set_by_caller


async def test_a_shorter_caller_deadline_wins_and_says_so() -> None:
    now = asyncio.get_running_loop().time()
    deadline = Deadline.for_call(2.0, cap=15.0)
    assert deadline.expires_at == pytest.approx(now + 2.0 - RESPONSE_MARGIN, abs=0.005)
    assert deadline.set_by_caller


async def test_a_stream_items_cap_runs_from_when_it_was_read_and_keeps_its_margin() -> None:
    now = asyncio.get_running_loop().time()
    deadline = Deadline.for_call(60.0, cap=3.0, margin=0.25, received_at=now - 1.0)
    assert deadline.expires_at == pytest.approx(now + 1.75, abs=0.005)
    assert not deadline.set_by_caller
    assert deadline.remaining() == pytest.approx(1.75, abs=0.005)


async def test_an_expired_caller_deadline_leaves_no_time() -> None:
    deadline = Deadline.for_call(0.001, cap=15.0)
    assert deadline.set_by_caller
    assert deadline.remaining() == 0.0
