"""The hostile section: each attack against a live gateway, and what another caller saw meanwhile."""

from __future__ import annotations

from bench.hostile import CANARY_DEADLINE, SETTLE, AttackResult, HostileResult, measure
from bench.hostile_attacks import ATTACKS
from bench.report import Figure
from bench.sections import Progress, Section

CLOUD_CANARY_P99_GOAL = 1.0
RSS_SETTLED_GOAL = 1.10


def section(quick: bool) -> Section[HostileResult]:
    return Section(
        name="hostile",
        header=_header(),
        measure=_measure,
        details=_details,
        figures=_figures(),
    )


async def _measure(number: int, progress: Progress) -> HostileResult:
    return await measure(ATTACKS, progress)


def _header() -> str:
    return "\n".join(
        [
            "one gateway process: the default route on the local backend, `canary_cloud` on the tencent "
            "backend against the IMS emulator (0.8 s, 100/s);",
            "  bearer tokens name the attacker and the canaries",
            f"  per attack: two canaries (local, tencent) call every 0.2 s with a {CANARY_DEADLINE:.0f} s "
            f"deadline, health is polled every 0.25 s, RSS sampled every 50 ms and read again {SETTLE:.0f} s "
            "after the attack; the baseline RSS is the warm gateway's before the first attack",
        ]
    )


def _p99(result: AttackResult, which: str) -> float:
    sample = result.canary_cloud if which == "cloud" else result.canary_local
    return sample.percentile(0.99)


def _details(number: int, result: HostileResult) -> str:
    rows = [
        [
            "attack",
            "attacker got",
            "mapped",
            "canary fails",
            "local p99",
            "cloud p99",
            "peak RSS",
            "RSS +30 s",
            "health wrong",
            "took",
        ]
    ]
    for attack in result.attacks:
        codes = ", ".join(f"{code} {count}" for code, count in attack.codes.most_common())
        rows.append(
            [
                attack.name,
                codes,
                "yes" if attack.mapped else "NO",
                str(attack.canary_local.failures + attack.canary_cloud.failures),
                f"{_p99(attack, 'local') * 1000:.0f} ms",
                f"{_p99(attack, 'cloud') * 1000:.0f} ms",
                f"{attack.peak_rss / 2**20:.0f} MiB",
                f"{attack.settled_rss / attack.baseline_rss:.2f}x",
                f"{attack.health_disagreements}/{attack.health_buckets}",
                f"{attack.seconds:.0f} s",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    baseline = result.attacks[0].baseline_rss if result.attacks else 0
    return f"run {number} (baseline RSS {baseline / 2**20:.0f} MiB):\n" + "\n".join(lines)


def _figures() -> list[Figure[HostileResult]]:
    return [
        Figure(
            "attacks answered with a mapped status",
            "%",
            lambda r: sum(a.mapped for a in r.attacks) / len(r.attacks),
            "100 %",
            lambda v: v == 1.0,
        ),
        Figure(
            "canary calls not answered in 5 s (all attacks)",
            "",
            lambda r: sum(a.canary_local.failures + a.canary_cloud.failures for a in r.attacks),
            "0",
            lambda v: v == 0,
        ),
        Figure(
            "worst tencent canary p99",
            "ms",
            lambda r: max(_p99(a, "cloud") for a in r.attacks),
            f"< {CLOUD_CANARY_P99_GOAL * 1000:.0f} ms",
            lambda v: v < CLOUD_CANARY_P99_GOAL,
        ),
        Figure("worst local canary p99", "ms", lambda r: max(_p99(a, "local") for a in r.attacks)),
        Figure("highest peak RSS", "MiB", lambda r: max(a.peak_rss for a in r.attacks)),
        Figure(
            "worst RSS 30 s after, over baseline",
            "x",
            lambda r: max(a.settled_rss / a.baseline_rss for a in r.attacks),
            f"<= {RSS_SETTLED_GOAL:.2f}x",
            lambda v: v <= RSS_SETTLED_GOAL,
        ),
        Figure(
            "seconds where health disagreed with the canaries",
            "",
            lambda r: sum(a.health_disagreements for a in r.attacks),
            "0",
            lambda v: v == 0,
        ),
    ]
