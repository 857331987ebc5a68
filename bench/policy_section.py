"""The policy section (`--only policy`): the cost of the gateway's policy with large lists loaded."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from bench.policy import OCR_TEXT, PROMO_TEXT, PolicyResult, PolicySizes, measure_policy
from bench.report import Figure
from bench.sections import Progress, Section

TEXT_AND_EXACT_GOAL = 100e-6
FULL = PolicySizes(
    keywords=100_000,
    exact_hashes=1_000_000,
    pdq_hashes=100_000,
    pdq_sizes=(10_000, 100_000, 1_000_000),
    calls=20_000,
)
QUICK = PolicySizes(
    keywords=100_000, exact_hashes=1_000_000, pdq_hashes=100_000, pdq_sizes=(10_000, 100_000), calls=2_000
)


def section(quick: bool) -> Section[PolicyResult]:
    sizes = QUICK if quick else FULL
    return Section(
        name="policy",
        header=_header(sizes),
        measure=functools.partial(_measure, sizes),
        details=_details,
        figures=_figures(sizes),
    )


async def _measure(sizes: PolicySizes, number: int, progress: Progress) -> PolicyResult:
    progress("policy: building the lists")
    # CPU-bound and in this process: off the event loop like the gateway's own reload.
    return await asyncio.to_thread(measure_policy, sizes, number)


def _header(sizes: PolicySizes) -> str:
    return "\n".join(
        [
            f"in this process, with {sizes.keywords:,} keywords (Latin and CJK, one list), "
            f"{sizes.exact_hashes:,} exact SHA-256 hashes and {sizes.pdq_hashes:,} PDQ hashes (random) "
            "loaded:",
            "  text and exact hash: the exact-list look-up of an image's SHA-256, then thresholds and the "
            f"keyword list over a {len(OCR_TEXT)}-character Chinese and English OCR text (decide()), "
            "per call",
            "  detectors: phone numbers (CN, US) and URLs over the same text, over it with a phone "
            f"number and a URL added, and over a {len(PROMO_TEXT)}-character poster's text (prices, "
            "dates: the phone search runs, neither finds); searched in a worker thread, the check whether "
            "to search on the event loop; PDQ hashing: a 512 x 512 photograph (JPEG) and a 2048 x 2048 one, "
            "decoded, downsampled and hashed",
            "  near-duplicate look-up (distance 31): a random hash against lists of "
            + ", ".join(f"{n:,}" for n in sizes.pdq_sizes)
            + " hashes; memory per 100,000 entries: the keyword index's resident set (built in a fresh "
            "process), the hash lists' arrays (PDQ: 96 bytes a hash plus 8 MiB of bucket offsets)",
        ]
    )


def _details(number: int, result: PolicyResult) -> str:
    builds = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.build_seconds.items())
    return f"run {number}: lists built in {builds}"


def _figures(sizes: PolicySizes) -> list[Figure[PolicyResult]]:
    figures: list[Figure[PolicyResult]] = [
        _on_the_loop("text and exact hash per call", lambda r: r.text_and_exact),
        Figure("  keyword match per call", "us", lambda r: r.keywords),
        Figure("  exact-hash look-up per call", "us", lambda r: r.exact),
        Figure("detectors (phone, URL) per call, both found (worker thread)", "us", lambda r: r.detectors),
        Figure("  99th percentile", "us", lambda r: r.detectors_p99),
        Figure("detectors per call, a poster's prices (worker thread)", "us", lambda r: r.detectors_promo),
        Figure("  99th percentile", "us", lambda r: r.detectors_promo_p99),
        Figure("detectors per call, text with neither", "us", lambda r: r.detectors_skipped),
        _on_the_loop("whether to search, per call (event loop)", lambda r: r.detectors_check),
        Figure("SHA-256 of a 512 x 512 JPEG", "us", lambda r: r.sha256),
        Figure("PDQ hash, 512 x 512 JPEG (off the loop)", "ms", lambda r: r.pdq_hash_small),
        Figure("PDQ hash, 2048 x 2048 JPEG (off the loop)", "ms", lambda r: r.pdq_hash_large),
    ]
    figures += [
        Figure(f"near-duplicate look-up, {size:,} hashes", "us", functools.partial(_lookup, size=size))
        for size in sizes.pdq_sizes
    ]
    figures += [
        Figure("memory per 100,000 keywords (MiB)", ".1", lambda r: r.keyword_mib),
        Figure("memory per 100,000 exact hashes (MiB)", ".1", lambda r: r.exact_mib),
        Figure("memory per 100,000 PDQ hashes (MiB)", ".1", lambda r: r.pdq_mib),
    ]
    return figures


def _on_the_loop(name: str, value: Callable[[PolicyResult], float]) -> Figure[PolicyResult]:
    """A cost paid on the event loop, within the goal."""
    goal = f"<= {TEXT_AND_EXACT_GOAL * 1e6:.0f} µs"
    return Figure(name, "us", value, goal, lambda v: v <= TEXT_AND_EXACT_GOAL)


def _lookup(result: PolicyResult, *, size: int) -> float:
    return result.near_lookup[size]
