"""Where a stream item's time went, from the client's clock and the gateway's item spans together:
before the gateway started it (reading, scheduling), inside it, and delivering the answer."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.percentile import percentile
from bench.soak.collector import ItemSpan
from bench.soak.plan import BACKEND_TIMEOUT, LATE_TOLERANCE
from bench.soak.streams import StreamLedger

LIMIT = BACKEND_TIMEOUT + LATE_TOLERANCE


@dataclass
class Phases:
    # Seconds per item with a span, in each phase; the three add up to its latency.
    before: list[float] = field(default_factory=list)
    inside: list[float] = field(default_factory=list)
    after: list[float] = field(default_factory=list)
    # Items answered with no span received (the gateway's exporter dropped it, or never made it).
    unmatched: int = 0
    # (before, inside, after) of every item answered later than the timeout + tolerance.
    late: list[tuple[float, float, float]] = field(default_factory=list)

    @property
    def late_inside(self) -> int:
        """Items whose span alone outlasted the timeout + tolerance: the gateway overran its own
        deadline, whatever happened outside it."""
        return sum(1 for seconds in self.inside if seconds > LIMIT)

    def describe(self) -> str:
        lines = [
            "; ".join(
                f"{name} p50 {_ms(percentile(values, 0.5))}, p99 {_ms(percentile(values, 0.99))}, "
                f"max {_ms(max(values, default=float('nan')))}"
                for name, values in (("before", self.before), ("inside", self.inside), ("after", self.after))
            )
        ]
        outside = [(before, after) for before, inside, after in self.late if inside <= LIMIT]
        if self.late:
            lines.append(
                f"late items: {len(self.late) - len(outside)} overran inside the gateway's span; "
                f"{len(outside)} kept it but lost p50 {_ms(percentile([b for b, _ in outside], 0.5))} "
                f"before it and {_ms(percentile([a for _, a in outside], 0.5))} after it"
            )
        return "\n  ".join(lines)


def split(ledgers: list[StreamLedger], spans: dict[str, ItemSpan]) -> Phases:
    phases = Phases()
    for ledger in ledgers:
        for index, answered in ledger.answered_at.items():
            span = spans.get(ledger.correlation_id(index))
            if span is None:
                phases.unmatched += 1
                continue
            sent = ledger.sent_at[index]
            before = span.start - (sent + ledger.wall_offset)
            inside = span.end - span.start
            after = answered + ledger.wall_offset - span.end
            phases.before.append(before)
            phases.inside.append(inside)
            phases.after.append(after)
            if answered - sent > LIMIT:
                phases.late.append((before, inside, after))
    return phases


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"
