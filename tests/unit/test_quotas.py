"""Quotas, one module at a time: the routing file's `[quotas]`, the calendar, reservations and their
settlement, hard refusals, soft thresholds, the store's outages in each mode, and the reload."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tomllib
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from backends.base import Fingerprint
from backends.errors import BackendError, Kind
from backends.image_limits import IMS_IMAGE_LIMITS
from common.scrub import Scrubber
from service.auth import CALLER
from service.deadlines import Deadline
from service.errors import CallFailure, failure_status
from service.governor import Priority, RateGovernor
from service.quotas.attempt import AttemptQuota
from service.quotas.calendar import period_window
from service.quotas.config import QuotaBook, load_quotas, quotas_from_document
from service.quotas.guard import QuotaGuard
from service.quotas.refusal import QuotaExhausted
from service.quotas.reload import QuotaReloader
from service.quotas.store import Counter, LocalStore, Reservation, StoreUnavailable
from service.retry import BEFORE_BILLED_ATTEMPT, Retrier, RetryPolicy
from service.routing_file import RoutesError
from service.telemetry import BoundedLabel

SHANGHAI = ZoneInfo("Asia/Shanghai")
# 2026-12-06 23:59:50 in Shanghai.
LATE = datetime(2026, 12, 6, 23, 59, 50, tzinfo=SHANGHAI).timestamp()


def book(text: str) -> QuotaBook:
    return quotas_from_document(tomllib.loads(text))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FlakyStore(LocalStore):
    """The in-process store, made to fail on demand as an unreachable Redis would."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.down = False
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise StoreUnavailable("ConnectionError")

    async def reserve(self, counters: Sequence[Counter]) -> Reservation:
        self._check()
        return await super().reserve(counters)

    async def release(self, keys: Sequence[str]) -> None:
        self._check()
        await super().release(keys)

    async def read(self, keys: Sequence[str]) -> list[int]:
        self._check()
        return await super().read(keys)

    async def add(self, counts: Mapping[str, tuple[int, int]]) -> None:
        self._check()
        await super().add(counts)


def guard(
    quotas: QuotaBook, clock: Clock, *, mode: str = "fail-closed", store: LocalStore | None = None
) -> tuple[QuotaGuard, InMemoryMetricReader, list[float]]:
    reader = InMemoryMetricReader()
    monotonic = [0.0]
    made = QuotaGuard(
        quotas,
        store or LocalStore(clock),
        zone=SHANGHAI,
        mode=mode,  # type: ignore[arg-type]
        meter=MeterProvider(metric_readers=[reader]).get_meter("test"),
        callers=BoundedLabel(10),
        clock=clock,
        monotonic=lambda: monotonic[0],
    )
    return made, reader, monotonic


def points(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, object], ...], float]:
    data = reader.get_metrics_data()
    found: dict[tuple[tuple[str, object], ...], float] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        found[tuple(sorted(point.attributes.items()))] = point.value  # type: ignore[union-attr]
    return found


HARD_DAY = """
[quotas.uploads]
per_day = 3
"""


def test_a_table_or_an_array_of_tables_with_their_names() -> None:
    quotas = book(
        """
[quotas.uploads]
per_day = 500

[[quotas.reports]]
per_month = 100000
[[quotas.reports]]
per_day = 5000
mode = "soft"
biz_types = ["avatars", "kids_*"]
"""
    )
    assert [(q.name, q.limit, q.hard) for q in quotas.of("uploads")] == [("per_day", 500, True)]
    assert [q.name for q in quotas.of("reports")] == ["per_month", "per_day[avatars,kids_*]"]
    assert [q.name for q in quotas.governing("reports", "kids_photos")] == [
        "per_month",
        "per_day[avatars,kids_*]",
    ]
    assert [q.name for q in quotas.governing("reports", "other")] == ["per_month"]
    assert quotas.of("nobody") == ()


def test_every_mistake_is_reported_with_where_it_is(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(
        """
[quotas.a]
per_day = 5
per_month = 6
[quotas.b]
mode = "strict"
per_day = -1
[quotas.c]
per_day = 1
colour = "red"
""",
        encoding="utf-8",
    )
    with pytest.raises(RoutesError) as raised:
        load_quotas(path)
    problems = "\n".join(raised.value.problems)
    assert "[quotas.a]: give per_day or per_month (one of them)" in problems
    assert "[quotas.b] mode" in problems
    assert "[quotas.b] per_day" in problems
    assert "[quotas.c] colour" in problems


def test_the_calendar_is_shanghai_days_and_months() -> None:
    day = period_window("day", LATE, SHANGHAI)
    assert day.start.isoformat() == "2026-12-06T00:00:00+08:00"
    assert day.end.isoformat() == "2026-12-07T00:00:00+08:00"
    assert day.seconds_left(LATE) == pytest.approx(10)
    month = period_window("month", LATE, SHANGHAI)
    assert (month.start.isoformat(), month.end.isoformat()) == (
        "2026-12-01T00:00:00+08:00",
        "2027-01-01T00:00:00+08:00",
    )
    # A day with a DST change is 23 hours long where the zone has one.
    paris = ZoneInfo("Europe/Paris")
    spring = period_window("day", datetime(2026, 3, 29, 12, tzinfo=paris).timestamp(), paris)
    assert spring.end.timestamp() - spring.start.timestamp() == 23 * 3600


async def test_a_hard_quota_refuses_past_its_limit_until_the_day_rolls_over() -> None:
    clock = Clock(LATE)
    gate, reader, _ = guard(book(HARD_DAY), clock)
    for _ in range(3):
        await gate.reserve("uploads", "")
    with pytest.raises(QuotaExhausted) as refused:
        await gate.reserve("uploads", "")
    assert refused.value.retry_after == pytest.approx(10)
    status = failure_status(CallFailure(refused.value, backend="cloud", attempts=1), Scrubber())
    assert "per_day (3 billed calls a day)" in status.message
    # Another caller, and a caller without quotas, are not governed by it.
    await gate.reserve("others", "")
    assert points(reader, "moderation.quota.refused") == {(("caller", "uploads"), ("quota", "per_day")): 1}
    assert points(reader, "moderation.quota.used") == {(("caller", "uploads"), ("quota", "per_day")): 3}
    clock.now += 11
    await gate.reserve("uploads", "")
    assert (await gate.usage("uploads"))[0].used == 1
    assert points(reader, "moderation.quota.limit") == {(("caller", "uploads"), ("quota", "per_day")): 3}


async def test_all_or_nothing_across_a_callers_quotas() -> None:
    quotas = book(
        """
[[quotas.uploads]]
per_day = 10
[[quotas.uploads]]
per_month = 2
"""
    )
    gate, _, _ = guard(quotas, Clock(LATE))
    await gate.reserve("uploads", "")
    await gate.reserve("uploads", "")
    with pytest.raises(QuotaExhausted) as refused:
        await gate.reserve("uploads", "")
    assert refused.value.quota == "per_month"
    # The refused reservation took nothing from the day's quota.
    assert [u.used for u in await gate.usage("uploads")] == [2, 2]


async def test_a_soft_quota_serves_and_says_so_once_at_80_and_once_at_100(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate, reader, _ = guard(book('[quotas.uploads]\nper_day = 5\nmode = "soft"\n'), Clock(LATE))
    with caplog.at_level(logging.WARNING, logger="service.quotas.guard"):
        for _ in range(8):
            await gate.reserve("uploads", "")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "80 % of its soft quota per_day (4 of 5" in lines[0]
    assert "100 % of its soft quota per_day (5 of 5" in lines[1]
    reached = points(reader, "moderation.quota.soft_reached")
    assert reached == {
        (("caller", "uploads"), ("quota", "per_day"), ("threshold", "80")): 1,
        (("caller", "uploads"), ("quota", "per_day"), ("threshold", "100")): 1,
    }
    assert (await gate.usage("uploads"))[0].used == 8


class Backend:
    """A billed backend's outcomes, one per call."""

    def __init__(self, outcome: BaseException | None) -> None:
        self.outcome = outcome
        self.name = "cloud"
        self.fingerprint = Fingerprint("test", "0")
        self.image_limits = IMS_IMAGE_LIMITS
        self.concurrency = None

    async def start(self) -> None:
        return None

    async def moderate(self, request: ModerateImageRequest, *, timeout: float) -> ModerateImageResponse:
        if self.outcome is not None:
            raise self.outcome
        return ModerateImageResponse()

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize(
    ("outcome", "kept"),
    [
        (None, 1),
        (BackendError(Kind.TIMEOUT, "late"), 1),
        (BackendError(Kind.UNAVAILABLE, "InternalError"), 1),
        (BackendError(Kind.RATE_LIMITED, "slow down"), 0),
        (BackendError(Kind.INVALID_REQUEST, "bad image"), 0),
        (BackendError(Kind.MISCONFIGURED, "bad key"), 0),
        (asyncio.CancelledError(), 1),
    ],
)
async def test_only_billed_attempts_keep_their_unit(outcome: BaseException | None, kept: int) -> None:
    gate, _, _ = guard(book(HARD_DAY), Clock(LATE))
    retrier = Retrier(Backend(outcome), RetryPolicy(max_attempts=1), quota=AttemptQuota(gate))
    CALLER.set("uploads")
    with contextlib.suppress(CallFailure, asyncio.CancelledError):
        await retrier.moderate(ModerateImageRequest(), Deadline.for_call(1))
    assert (await gate.usage("uploads"))[0].used == kept


async def test_an_attempt_that_gets_no_rate_slot_gives_its_unit_back() -> None:
    gate, _, _ = guard(book(HARD_DAY), Clock(LATE))
    governor = RateGovernor(1, window=1.0)
    await governor.acquire(Priority.INTERACTIVE, Deadline.for_call(None))  # the only slot for a second
    retrier = Retrier(Backend(None), RetryPolicy(), governor=governor, quota=AttemptQuota(gate))
    CALLER.set("uploads")
    try:
        with pytest.raises(CallFailure) as refused:
            await retrier.moderate(ModerateImageRequest(), Deadline.for_call(0.3))
    finally:
        await governor.aclose()
    assert refused.value.error.kind is Kind.THROTTLED
    assert (await gate.usage("uploads"))[0].used == 0


@pytest.mark.parametrize("kind", [Kind.OUTCOME_IN_DOUBT, Kind.THROTTLED])
async def test_an_attempt_its_task_refuses_to_send_gives_its_unit_back(kind: Kind) -> None:
    """Refused after its rate slot by `BEFORE_BILLED_ATTEMPT` (a task in doubt, or its record unwritten)."""
    gate, _, _ = guard(book(HARD_DAY), Clock(LATE))
    retrier = Retrier(Backend(None), RetryPolicy(), quota=AttemptQuota(gate), billed=True)

    async def refuse() -> None:
        raise BackendError(kind, "not sent")

    CALLER.set("uploads")
    announced = BEFORE_BILLED_ATTEMPT.set(refuse)
    try:
        with pytest.raises(CallFailure) as refused:
            await retrier.moderate(ModerateImageRequest(), Deadline.for_call(1))
    finally:
        BEFORE_BILLED_ATTEMPT.reset(announced)
    assert (refused.value.error.kind, refused.value.attempts) == (kind, 0)
    assert (await gate.usage("uploads"))[0].used == 0


async def test_a_caller_past_a_hard_quota_waits_for_no_rate_slot() -> None:
    gate, _, _ = guard(book(HARD_DAY), Clock(LATE))
    governor = RateGovernor(1, window=1.0)
    retrier = Retrier(Backend(None), RetryPolicy(), governor=governor, quota=AttemptQuota(gate))
    CALLER.set("uploads")
    try:
        for _ in range(3):
            await gate.reserve("uploads", "")  # the day's three units used elsewhere
        with pytest.raises(CallFailure) as refused:
            await retrier.moderate(ModerateImageRequest(), Deadline.for_call(5))
    finally:
        await governor.aclose()
    assert (refused.value.error.kind, refused.value.attempts) == (Kind.CALLER_QUOTA_EXHAUSTED, 0)
    assert governor.grants == 0


async def test_fail_closed_refuses_while_the_store_is_away_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock(LATE)
    store = FlakyStore(clock)
    gate, reader, monotonic = guard(book(HARD_DAY), clock, store=store)
    store.down = True
    with caplog.at_level(logging.WARNING, logger="service.quotas.guard"):
        for _ in range(3):
            with pytest.raises(BackendError) as refused:
                await gate.reserve("uploads", "")
            assert refused.value.kind is Kind.QUOTA_UNAVAILABLE
        # Asked once: the calls within the probe interval do not wait for it.
        assert store.calls == 1
        await gate.reserve("others", "")  # not governed, not refused
        store.down = False
        monotonic[0] += 1.0
        await gate.reserve("uploads", "")
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "quota store (Redis) unreachable (ConnectionError)",
        "quota store (Redis) reachable again",
    ]
    assert points(reader, "moderation.quota.store_transitions") == {
        (("mode", "fail-closed"), ("state", "down")): 1,
        (("mode", "fail-closed"), ("state", "up")): 1,
    }


async def test_fail_open_serves_counts_here_and_adds_the_counts_once_the_store_is_back() -> None:
    clock = Clock(LATE)
    store = FlakyStore(clock)
    gate, _, monotonic = guard(book(HARD_DAY), clock, mode="fail-open", store=store)
    await gate.reserve("uploads", "")
    store.down = True
    tickets = [await gate.reserve("uploads", "") for _ in range(4)]  # past the limit: served
    await tickets[0].release()  # one was not billed
    store.down = False
    monotonic[0] += 1.0
    with pytest.raises(QuotaExhausted):
        await gate.reserve("uploads", "")
    assert (await gate.usage("uploads"))[0].used == 4


def test_a_changed_routing_file_is_read_again_and_a_broken_one_keeps_the_quotas(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(HARD_DAY, encoding="utf-8")
    applied: list[QuotaBook] = []
    reloader = QuotaReloader(path, applied.append)
    reloader.check()
    assert applied == []
    path.write_text(HARD_DAY.replace("3", "30"), encoding="utf-8")
    reloader.check()
    assert applied[-1].of("uploads")[0].limit == 30
    path.write_text('[quotas.uploads]\nmode = "both"\n', encoding="utf-8")
    with caplog.at_level(logging.ERROR):
        reloader.check()
    assert len(applied) == 1
    assert "the previous ones stay" in caplog.text
