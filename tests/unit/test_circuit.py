"""The circuit breaker's transitions (one log line and one count each), and which failures count."""

from __future__ import annotations

import logging

import pytest
from moderation.v1.moderation_service_pb2 import ModerateImageRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from common.scrub import Scrubber
from service.circuit import CircuitBreaker, CircuitState
from service.deadlines import Deadline
from service.errors import CallFailure, failure_status
from service.governor import Priority, RateGovernor
from service.retry import Retrier, RetryPolicy
from service.routing import Router, Upstream
from service.telemetry import Metrics
from tests.support.backends import SlowBackend
from tests.support.metrics import points

REQUEST = ModerateImageRequest(url="https://a.example/x.png")


def transitions(reader: InMemoryMetricReader) -> dict[object, object]:
    return {
        attributes["moderation.circuit.state"]: value
        for attributes, value in points(reader, "moderation.circuit.transitions")
    }


def test_every_transition_writes_one_log_line_and_one_count(caplog: pytest.LogCaptureFixture) -> None:
    reader = InMemoryMetricReader()
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=5.0, clock=lambda: now[0])
    breaker.report_as("cloud", Metrics(MeterProvider(metric_readers=[reader]).get_meter("test")))
    with caplog.at_level(logging.WARNING, logger="service.circuit"):
        breaker.record_failure("timeout")
        breaker.record_failure("timeout")
        assert not breaker.allow()
        now[0] = 5.0
        assert breaker.allow()  # the probe: half-open
        assert not breaker.allow()
        breaker.record_success()
        breaker.record_success()
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "circuit of backend 'cloud' opened after 2 consecutive failures (last: timeout); "
        "calls skip it for 5 s",
        "circuit of backend 'cloud' half-open: one probe call goes through",
        "circuit of backend 'cloud' closed: the backend answers again",
    ]
    assert transitions(reader) == {"open": 1, "half_open": 1, "closed": 1}


def router_for(backend: SlowBackend, breaker: CircuitBreaker, governor: RateGovernor) -> Router:
    retrier = Retrier(backend, RetryPolicy(max_attempts=1), governor=governor)
    retrier.latency.observe(0.2)  # the backend usually answers in 0.2 s
    return Router.single(Upstream(backend, governor, retrier, breaker))


async def test_a_timeout_starved_of_time_never_opens_the_circuit_and_a_slow_backend_does() -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    governor = RateGovernor(100)
    router = router_for(SlowBackend(2.0), breaker, governor)
    route = router.route_for(REQUEST.biz_type)
    try:
        # 0.3 s left: enough to send (0.25 s needed), not the twice-typical 0.4 s that makes it a fault.
        with pytest.raises(CallFailure):
            await router.moderate(REQUEST, route, Deadline.for_call(None, cap=0.3), Priority.BATCH)
        assert breaker.allow_peek()
        with pytest.raises(CallFailure):
            await router.moderate(REQUEST, route, Deadline.for_call(None, cap=0.6), Priority.BATCH)
        assert breaker.state is CircuitState.OPEN
        with pytest.raises(CallFailure) as caught:
            await router.moderate(REQUEST, route, Deadline.for_call(None, cap=0.6), Priority.BATCH)
    finally:
        await governor.aclose()
    status = failure_status(caught.value, Scrubber())
    assert caught.value.backend == "slow"
    assert status.message == "backend 'slow': its circuit is open after repeated failures; it was not called"
