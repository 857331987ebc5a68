"""Callers' shares of a budget: made on a caller's first call, closed once the caller goes idle."""

from __future__ import annotations

import asyncio

import pytest
from moderation.v1.moderation_service_pb2 import ModerateImageRequest

from service import routing
from service.auth import CALLER
from service.deadlines import Deadline
from service.governor import Priority, RateGovernor
from service.retry import Retrier, RetryPolicy
from service.routing import Router, Upstream
from tests.support.backends import SlowBackend


class RecordingBudget(RateGovernor):
    """A budget whose slices say when they are closed."""

    def __init__(self) -> None:
        super().__init__(1000)
        self.slices: dict[str, RateGovernor] = {}
        self.closed: list[str] = []

    def share(self, fraction: float, name: str) -> RateGovernor:
        budget = self

        class Slice(RateGovernor):
            async def aclose(self) -> None:
                budget.closed.append(name)
                await super().aclose()

        self.slices[name] = Slice(100)
        return self.slices[name]


async def call_as(router: Router, caller: str) -> None:
    token = CALLER.set(caller)
    try:
        request = ModerateImageRequest(url="https://a.example/x.png")
        await router.moderate(request, router.route_for(""), Deadline.for_call(5.0), Priority.BATCH)
    finally:
        CALLER.reset(token)


async def test_a_callers_share_is_closed_once_it_goes_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routing, "IDLE_CALLER_SHARE", 0.2)
    backend, budget = SlowBackend(0.0), RecordingBudget()
    router = Router.single(
        Upstream(backend, budget, Retrier(backend, RetryPolicy(), governor=budget)), caller_share=0.5
    )
    try:
        await call_as(router, "gone")
        await call_as(router, "stays")
        await asyncio.sleep(0.25)
        await call_as(router, "stays")
        await asyncio.sleep(0)  # the closing task runs
        assert budget.closed == ["caller:gone"]
        await call_as(router, "gone")  # back: a share of its own again
        assert budget.closed == ["caller:gone"]
    finally:
        await router.aclose()
        await budget.aclose()
