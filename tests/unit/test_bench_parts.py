"""The many-callers bench's own arithmetic: failures by class, callers' shares, circuit transitions read
from a real /metrics endpoint, the calls each replica sent per second, and the table and JSON that
compare two trees."""

from __future__ import annotations

import asyncio
import math
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bench.callers import Phase
from bench.circuits import CircuitWatch, read_circuits
from bench.fleet import Batch, Upstream
from bench.fleet_section import sent_per_second
from bench.fleet_senders import Timeline, tally
from bench.latency import LatencySample
from bench.percentile import percentile
from bench.report import Figure, as_json, compared_table
from bench.sections import Section, section_json
from testbed.stream import StreamResult

EXPOSITION = """\
# HELP moderation_circuit_state Each backend's circuit: 0 closed, 1 half-open (probing), 2 open (skipped)
# TYPE moderation_circuit_state gauge
moderation_circuit_state{moderation_backend="tencent"} %s
moderation_circuit_state{moderation_backend="private"} 0.0
moderation_governor_rate{moderation_backend="tencent"} 100.0
"""
# What a gateway with the transitions counter adds once a circuit changed.
COUNTED = """\
# TYPE moderation_circuit_transitions_total counter
moderation_circuit_transitions_total{moderation_backend="tencent",moderation_circuit_state="open"} %s
moderation_circuit_transitions_total{moderation_backend="tencent",moderation_circuit_state="closed"} %s
"""


def _stream(result_times: list[float], **fields: Any) -> StreamResult:
    return StreamResult(results=len(result_times), result_times=result_times, **fields)


def _batch(streams: list[StreamResult], unary_failures: int = 0) -> Batch:
    return Batch(1, streams, [], [LatencySample(failures=unary_failures)], Upstream(0, 0, 0, 0))


def test_failures_are_classified_by_code_and_reason_and_by_what_became_of_the_item() -> None:
    lost = _stream([1.0], sent=4, answers=Counter({0: 2, 1: 1}))
    lost.errors["DEADLINE_EXCEEDED/BACKEND_TIMEOUT"] += 1
    ended = _stream([], call_error="UNAVAILABLE: the gateway went away")
    ended.errors["RESOURCE_EXHAUSTED/BACKEND_RATE_LIMITED"] += 2

    batch = _batch([lost, ended], unary_failures=1)

    assert batch.failures == {
        "DEADLINE_EXCEEDED/BACKEND_TIMEOUT": 1,
        "RESOURCE_EXHAUSTED/BACKEND_RATE_LIMITED": 2,
        "never answered": 2,  # indexes 2 and 3
        "answered twice": 1,
        "stream ended UNAVAILABLE": 1,
        "unary call failed": 1,
    }
    assert batch.client_errors == 8


def test_each_callers_share_counts_only_while_both_are_busy() -> None:
    # A's two streams answer from 0 to 4 s, B's one from 2 to 6 s: both are busy from 2 to 4 s.
    a = [_stream([0.0, 1.0, 2.0, 2.5, 3.0]), _stream([2.0, 3.5, 4.0])]
    b = [_stream([2.0, 3.0, 4.0, 5.0, 6.0])]

    shares = Phase(_batch([*a, *b]), circuit_transitions=0).shares(2)

    assert shares == pytest.approx((6 / 200, 3 / 200))


def test_a_caller_that_got_no_answer_has_no_share() -> None:
    assert Phase(_batch([_stream([1.0, 2.0]), _stream([])]), 0).shares(1) == (0.0, 0.0)


def test_calls_are_counted_per_second_from_the_first_by_the_replica_whose_port_carried_them() -> None:
    # (arrival stamp, client port): ports 5001 and 5002 are replicas 1 and 2's, 5003 no replica's.
    arrivals = [(10.0, 5001), (10.5, 5002), (11.25, 5001), (12.5, 5003), (12.75, 5001)]
    sent = tally(arrivals, {5001: 0, 5002: 1}, 3)
    assert sent.per_replica == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert sent.unattributed == [0, 0, 1]
    assert sent.total == [2, 1, 2]
    assert tally([], {}, 2) == Timeline([[], []], [])


def test_the_series_has_a_line_per_replica_and_the_total_and_names_what_no_replica_sent() -> None:
    attributed = Batch(2, [], [], [], Upstream(0, 0, 0, 0), Timeline([[50, 49], [48, 50]], [0, 0]))
    assert sent_per_second("2 replicas", attributed) == {
        "2 replicas: replica 1": [50, 49],
        "2 replicas: replica 2": [48, 50],
        "2 replicas: total": [98, 99],
    }
    stray = Batch(1, [], [], [], Upstream(0, 0, 0, 0), Timeline([[90, 95]], [0, 3]))
    assert sent_per_second("1 replica", stray)["1 replica: not attributed"] == [0, 3]
    assert sent_per_second("1 replica", stray)["1 replica: total"] == [90, 98]


def test_only_the_circuit_gauge_and_the_transitions_counter_are_read() -> None:
    circuits = read_circuits(EXPOSITION % "2.0" + COUNTED % ("3.0", "2.0"))

    assert circuits.states == {
        'moderation_circuit_state{moderation_backend="tencent"}': 2.0,
        'moderation_circuit_state{moderation_backend="private"}': 0.0,
    }
    assert circuits.transitions == 5.0
    assert read_circuits(EXPOSITION % "0.0").transitions == 0.0


@pytest.fixture
def metrics() -> Iterator[tuple[str, list[str]]]:
    """A /metrics endpoint answering the next of `states` (an exposition, or the tencent circuit's
    state) on each request."""
    states: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state = states.pop(0)
            body = (state if "\n" in state else EXPOSITION % state).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics", states
    finally:
        server.shutdown()
        server.server_close()


def test_every_change_of_the_gauge_is_one_transition(metrics: tuple[str, list[str]]) -> None:
    url, states = metrics
    states += ["0.0", "2.0", "2.0", "1.0", "0.0"]
    watch = CircuitWatch([url])

    async def poll_all() -> None:
        for _ in range(5):
            await watch.poll()

    asyncio.run(poll_all())

    assert watch.transitions == 3  # closed -> open -> half-open -> closed


def test_the_counter_adds_the_transitions_too_quick_for_a_poll(metrics: tuple[str, list[str]]) -> None:
    url, states = metrics
    # Open and closed again between two polls: the gauge shows no change, the counter two.
    states += [EXPOSITION % "0.0", EXPOSITION % "0.0" + COUNTED % ("1.0", "1.0")]
    watch = CircuitWatch([url])

    async def poll_twice() -> None:
        await watch.poll()
        await watch.poll()

    asyncio.run(poll_twice())

    assert watch.transitions == 2


def test_an_unreachable_gateway_is_skipped_not_counted(metrics: tuple[str, list[str]]) -> None:
    url, states = metrics
    states += ["0.0", "2.0"]
    watch = CircuitWatch(["http://127.0.0.1:1/metrics", url])

    async def poll_twice() -> None:
        await watch.poll()
        await watch.poll()

    asyncio.run(poll_twice())

    assert watch.transitions == 1


FIGURES = [
    Figure[float]("budget", "%", lambda r: r, ">= 96%", lambda v: v >= 0.96),
    Figure[float]("failed", "", lambda r: 0.0 if r > 0.5 else math.nan),
]


def test_the_compared_table_gives_both_medians_and_their_ratio() -> None:
    lines = compared_table(FIGURES, current=[0.97, 0.99, 0.98], baseline=[0.8, 0.82, 0.84]).splitlines()

    assert lines[0].split() == [
        "figure",
        "run",
        "1",
        "run",
        "2",
        "run",
        "3",
        "median",
        "baseline",
        "ratio",
        "goal",
        "met",
    ]
    assert lines[2].split() == [
        "budget",
        "97.0",
        "%",
        "99.0",
        "%",
        "98.0",
        "%",
        "98.0",
        "%",
        "82.0",
        "%",
        "1.20x",
        ">=",
        "96%",
        "met",
        "(3/3",
        "runs)",
    ]
    assert lines[3].split() == ["failed", "0", "0", "0", "0", "0", "n/a"]  # no goal; 0 / 0 has no ratio


def test_json_has_every_run_and_null_for_what_could_not_be_measured() -> None:
    assert as_json(FIGURES, [0.95, 0.97, 0.94]) == [
        {
            "name": "budget",
            "unit": "%",
            "goal": ">= 96%",
            "values": [0.95, 0.97, 0.94],
            "median": 0.95,
            "met": False,
        },
        {"name": "failed", "unit": "", "goal": "", "values": [0.0, 0.0, 0.0], "median": 0.0, "met": None},
    ]
    assert as_json(FIGURES[1:], [0.2])[0]["values"] == [None]
    assert as_json(FIGURES[1:], [0.2])[0]["median"] is None


def test_a_sections_json_is_what_the_benchmark_page_reads() -> None:
    section = Section(
        name="demo",
        header="",
        measure=lambda number, progress: asyncio.sleep(0, result=0.95),
        details=lambda number, result: "",
        figures=FIGURES[:1],
        record=lambda result: {"raw": result},
        series=lambda results: {"shares": {"all": list(results)}},
    )
    recorded = section_json(section, [0.95, 0.97], "make bench ONLY=demo RUNS=2")
    assert set(recorded) == {
        "section",
        "command",
        "runs",
        "cores",
        "python",
        "measured_on",
        "figures",
        "series",
        "records",
    }
    assert (recorded["section"], recorded["runs"], recorded["records"]) == (
        "demo",
        2,
        [{"raw": 0.95}, {"raw": 0.97}],
    )
    assert recorded["figures"] == as_json(FIGURES[:1], [0.95, 0.97])
    assert recorded["series"] == {"shares": {"all": [0.95, 0.97]}}


def test_a_percentile_is_a_value_seen_by_nearest_rank() -> None:
    values = [0.4, 0.1, 0.3, 0.2]
    assert [percentile(values, share) for share in (0.25, 0.5, 0.51, 0.99, 1.0)] == [0.1, 0.2, 0.3, 0.4, 0.4]
    assert percentile([7.0], 0.99) == 7.0
    assert math.isnan(percentile([], 0.5))
    assert LatencySample([0.4, 0.1, 0.3, 0.2]).percentile(0.5) == 0.2


def test_the_budget_spent_counts_the_unary_calls_answered_during_the_batch_too() -> None:
    # 1,001 stream answers over 10 s, and 40 unary calls answered meanwhile: both spent the budget.
    stream = StreamResult(results=1001, first_answer=0.0, last_answer=10.0)
    unary = LatencySample(seconds=[0.8] * 40, failures=3)
    batch = Batch(1, [stream], [LatencySample()], [unary], Upstream(0, 0, 0, 0))
    assert batch.budget_spent == pytest.approx((1001 + 40 - 1) / (10 * 100))
