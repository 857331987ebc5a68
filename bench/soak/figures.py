"""The soak's figures against the issue's goals, and the details the table leaves out."""

from __future__ import annotations

import math
from collections.abc import Mapping

from bench.report import Figure, ratio
from bench.soak.metrics import ATTEMPTS, CIRCUIT, GRANTS, IN_FLIGHT, RATE, REJECTIONS, REQUESTS, RETRIES
from bench.soak.plan import (
    BACKEND_TIMEOUT,
    EMULATOR_JITTER,
    EMULATOR_LATENCY,
    FAULTS,
    GATEWAY_QPS,
    LATE_TOLERANCE,
    WARM_UP_SHARE,
    Plan,
)
from bench.soak.run import SoakResult
from bench.soak.tally import OK, Tally

RSS_GROWTH_GOAL = 0.10


def lost(result: SoakResult) -> int:
    """Items sent on a stream that ended OK but never answered (a failed stream is counted apart)."""
    return sum(ledger.unanswered for ledger in result.streams if ledger.ended == OK)


def billed_per_item(result: SoakResult) -> float:
    """Backend attempts but those refused with RequestLimitExceeded (IMS refuses them before moderating,
    unbilled), per image answered, streams and unary together. An upper bound: an attempt that failed
    before its request reached IMS (a refused connection) counts too."""
    attempts = result.metrics.total(ATTEMPTS) - result.metrics.by(ATTEMPTS).get("rate_limited", 0.0)
    return ratio(attempts, result.items.answered + result.unary.answered)


def figures(result: SoakResult) -> list[Figure[SoakResult]]:
    items = result.plan.total_items
    limit_ms = f"{BACKEND_TIMEOUT * 1000:.0f} + {LATE_TOLERANCE * 1000:.0f} ms"
    unary_ms = f"{result.plan.unary_limit * 1000:.0f} + {LATE_TOLERANCE * 1000:.0f} ms"
    return [
        Figure(f"stream items sent (of {items})", "", lambda r: sum(len(s.sent_at) for s in r.streams)),
        Figure(
            "streams that did not end OK", "", lambda r: sum(s.ended != OK for s in r.streams), "0", _zero
        ),
        Figure("stream items lost (sent, never answered)", "", lost, "0", _zero),
        Figure("stream items answered twice", "", lambda r: sum(s.duplicates for s in r.streams), "0", _zero),
        Figure(
            "stream answers with a wrong index or correlation id",
            "",
            lambda r: sum(s.misattributed for s in r.streams),
            "0",
            _zero,
        ),
        Figure(f"stream items answered later than {limit_ms}", "", lambda r: r.items.late, "0", _zero),
        Figure(
            f"stream items that took longer than {limit_ms} inside the gateway (item spans)",
            "",
            lambda r: r.phases.late_inside,
            "0",
            _zero,
        ),
        Figure(f"unary calls answered later than {unary_ms}", "", lambda r: r.unary.late, "0", _zero),
        Figure("stream items answered OK", "%", lambda r: _ok_share(r.items)),
        Figure("unary calls answered OK", "%", lambda r: _ok_share(r.unary)),
        Figure("billed calls per image (attempts but RequestLimitExceeded ones)", "x", billed_per_item),
        Figure(
            "backend attempts per image, rate-limited ones included",
            "x",
            lambda r: ratio(r.metrics.total(ATTEMPTS), r.items.answered + r.unary.answered),
        ),
        Figure("stream item latency p50", "ms", lambda r: r.items.percentile(0.5)),
        Figure("stream item latency p99", "ms", lambda r: r.items.percentile(0.99)),
        Figure("unary latency p50", "ms", lambda r: r.unary.percentile(0.5)),
        Figure("unary latency p99", "ms", lambda r: r.unary.percentile(0.99)),
        Figure("stream items per second", "/s", lambda r: ratio(r.items.answered, r.duration)),
        Figure(
            f"gateway RSS after warm-up ({WARM_UP_SHARE * 100:.0f} % of items)",
            "MiB",
            lambda r: r.rss.at(WARM_UP_SHARE),
        ),
        Figure("gateway RSS at the end", "MiB", lambda r: r.rss.end),
        Figure("gateway peak RSS (VmHWM)", "MiB", lambda r: r.rss.peak),
        Figure(
            "gateway RSS growth, warm-up to end",
            "%",
            lambda r: r.rss.growth(WARM_UP_SHARE),
            "< 10 %",
            lambda v: v < RSS_GROWTH_GOAL,
        ),
        Figure(
            "gateway RSS growth, least-squares fit",
            "%",
            lambda r: r.rss.fitted_growth(WARM_UP_SHARE),
            "< 10 %",
            lambda v: v < RSS_GROWTH_GOAL,
        ),
        Figure(
            "secrets in logs, spans, /metrics, answers received", "", lambda r: len(r.scan.hits), "0", _zero
        ),
    ]


def _zero(value: float) -> bool:
    return value == 0


def _ok_share(tally: Tally) -> float:
    return ratio(tally.outcomes[OK], tally.answered)


def header(plan: Plan) -> str:
    faults = ", ".join(f"{kind} {p * 100:g} %" for kind, p in FAULTS.items())
    return "\n".join(
        [
            f"load: {plan.streams} streams of {plan.items} items (at most {plan.client_window} unanswered "
            f"each), {plan.unary_rate:g} unary calls/s with a {plan.unary_deadline:g} s deadline",
            f"IMS emulator: {EMULATOR_LATENCY * 1000:.0f} ms + up to {EMULATOR_JITTER * 1000:.0f} ms, "
            f"no rate limit; faults per call: {faults} ({sum(FAULTS.values()) * 100:g} % in all)",
            f"gateway: IMS_QPS={GATEWAY_QPS}, MODERATION_BACKEND_TIMEOUT={BACKEND_TIMEOUT:g} s, tracing "
            "over OTLP to this process, JSON logs, /metrics",
            "latency: from sending an item (or call) to its answer; an item's deadline is its sending time "
            f"+ the {BACKEND_TIMEOUT:g} s backend timeout (the client keeps no more unanswered than the "
            "gateway reads ahead, so sending is reading); a unary call's is min(its deadline, the timeout)",
        ]
    )


def details(result: SoakResult) -> str:
    metrics, streams = result.metrics, result.items
    granted = ratio(metrics.total(GRANTS), result.duration)
    lines = [
        f"load ran {result.duration:.0f} s; gateway CPU {result.gateway_cpu:.0f} s "
        f"({ratio(result.gateway_cpu, result.duration):.2f} cores); gateway exit status after SIGTERM "
        f"{result.gateway_exit}",
        f"stream items: {streams.describe()}; worst answer {_overshoot(streams)} its deadline; late ones "
        f"by outcome {_counts(streams.late_outcomes)}",
        f"unary calls: {result.unary.describe()}; worst answer {_overshoot(result.unary)} its deadline; "
        f"late ones by outcome {_counts(result.unary.late_outcomes)}",
    ]
    lines += [
        f"  stream {s.number}: sent {len(s.sent_at)}, answered {s.tally.answered}, ended {s.ended}"
        for s in result.streams
    ]
    lines += [
        f"gateway /metrics: {metrics.total(ATTEMPTS):.0f} backend attempts by outcome "
        f"{_counts(metrics.by(ATTEMPTS))}; governor grants {_counts(metrics.by(GRANTS))}, "
        f"rejections {_counts(metrics.by(REJECTIONS))}; {granted:.0f} grants/s on average, pace "
        f"{metrics.total(RATE):.0f}/s at the end, of a {GATEWAY_QPS}/s budget",
        f"  retries by reason {_counts(metrics.by(RETRIES))}",
        f"  images by status {_counts(metrics.by(REQUESTS))}; in flight at the end "
        f"{_counts(metrics.by(IN_FLIGHT))}; circuit state at the end {metrics.total(CIRCUIT):.0f}",
        f"spans received: {result.spans.spans.total()} ({_counts(result.spans.spans)}); "
        f"{result.phases.unmatched} answered items without a span",
        f"stream item time {result.phases.describe()}",
        f"gateway log: {result.log.lines} lines by level {_counts(result.log.by_level)}, by logger "
        f"{_counts(result.log.by_logger)}; {len(result.log.not_json)} not JSON",
    ]
    lines += [f"  {count} x WARNING {shape}" for shape, count in result.log.warnings.most_common(8)]
    lines += [f"  ERROR line: {line}" for line in result.log.errors]
    lines += [f"  not JSON: {line}" for line in result.log.not_json[:3]]
    lines += [f"secret scan: {result.scan.summary()}", *(f"  {hit}" for hit in result.scan.hits[:10])]
    return "\n".join(lines)


def _overshoot(tally: Tally) -> str:
    if math.isinf(tally.worst_overshoot):
        return "n/a"
    seconds = tally.worst_overshoot
    return f"{abs(seconds) * 1000:.0f} ms {'after' if seconds > 0 else 'before'}"


def _counts(counts: Mapping[str, float]) -> str:
    """`{a: 3, b: 1}`, the largest first."""
    ordered = sorted(counts.items(), key=lambda item: -item[1])
    return "{" + ", ".join(f"{name}: {value:g}" for name, value in ordered) + "}"
