"""The local section: the embedded backend's evaluation (per-check recall and false alarms on images
made from the run's seed) and its performance through the gateway against a raw loop."""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass

from backends.local.models import Models
from bench.local_eval import EvalResult, EvalSizes, Score, evaluate
from bench.local_perf import CLIENT_WINDOW, LARGE, SMALL, WORKERS, PerfResult, PerfSizes, measure_perf
from bench.report import Figure, ratio
from bench.sections import Progress, Section

RECALL_GOAL = 0.95
FALSE_MATCH_GOAL = 0.01
THROUGHPUT_SHARE_GOAL = 0.90
# Notes listed per figure in a run's details; the rest are counted.
NOTES_SHOWN = 6


@dataclass(frozen=True)
class LocalSizes:
    evaluation: EvalSizes
    perf: PerfSizes


FULL = LocalSizes(EvalSizes(60, 40, 0.5, 20), PerfSizes(120, 6, 20))
QUICK = LocalSizes(EvalSizes(12, 8, 0.5, 4), PerfSizes(30, 2, 6))


@dataclass(frozen=True)
class LocalResult:
    evaluation: EvalResult
    perf: PerfResult


def section(quick: bool) -> Section[LocalResult]:
    sizes = QUICK if quick else FULL
    return Section(
        name="local",
        header=_header(sizes),
        measure=functools.partial(_measure, sizes),
        details=_details,
        figures=_figures(sizes),
    )


async def _measure(sizes: LocalSizes, number: int, progress: Progress) -> LocalResult:
    progress("local: loading the models for the evaluation")
    models = Models()
    models.warm_up()
    progress("local: evaluation, every image through an in-process LocalBackend (default policy)")
    evaluation = await evaluate(number, sizes.evaluation, models)
    return LocalResult(evaluation, await measure_perf(number, sizes.perf, progress))


def _header(sizes: LocalSizes) -> str:
    evaluation, perf = sizes.evaluation, sizes.perf
    return "\n".join(
        [
            "evaluation: images made from the run's number as seed; an in-process LocalBackend, the "
            "gateway's policy with 3 keyword lists over its text and scikit-image photographs as "
            "near-duplicate (PDQ) deny samples",
            f"  {evaluation.text_images} text images with a keyword and as many without (20-48 px), "
            f"{evaluation.qr_images} QR codes and as many decoys, {evaluation.library_share:.0%} of the "
            "photographs denied with 6 near-duplicates each, "
            f"{evaluation.noise_images} noise textures",
            "  a check's false alarms are counted over every image without what it looks for on which it ran",
            "performance: `python -m service` with MODERATION_BACKEND=local and the keyword lists "
            "against a raw loop, analyze_image and the policy over the same models and images in a "
            f"process of its own with {WORKERS} threads (the gateway's default MODERATION_LOCAL_WORKERS); "
            "both loaded at once, "
            f"they take {perf.chunks} turns each on {perf.stream_images} 640x480 photographs and text "
            f"images in all, the gateway's as one stream per turn with at most {CLIENT_WINDOW} in flight",
            f"  unary latency: {perf.latency_calls} sequential calls per size, a scikit-image photograph "
            f"resized to {SMALL[0]}x{SMALL[1]} and {LARGE[0]}x{LARGE[1]} (JPEG); last, the same stream "
            "without a client window, as `moderate FOLDER` sends it (the gateway then reads up to 128 items "
            "ahead, each within the 15 s backend timeout), and one unary call after it",
        ]
    )


def _figures(sizes: LocalSizes) -> list[Figure[LocalResult]]:
    return [
        Figure(
            "keyword recall (text of 20-48 px)",
            "%",
            lambda r: r.evaluation.keyword.rate,
            f">= {RECALL_GOAL:.0%}",
            lambda v: v >= RECALL_GOAL,
        ),
        Figure("keyword false positives", "%", lambda r: r.evaluation.keyword_false.rate),
        Figure(
            "library recall (the right sample)",
            "%",
            lambda r: r.evaluation.library.rate,
            f">= {RECALL_GOAL:.0%}",
            lambda v: v >= RECALL_GOAL,
        ),
        Figure(
            "library false matches",
            "%",
            lambda r: r.evaluation.library_false.rate,
            f"<= {FALSE_MATCH_GOAL:.0%}",
            lambda v: v <= FALSE_MATCH_GOAL,
        ),
        Figure(
            "QR codes decoded (exact payload)",
            "%",
            lambda r: r.evaluation.qr.rate,
            f">= {RECALL_GOAL:.0%}",
            lambda v: v >= RECALL_GOAL,
        ),
        Figure("QR codes reported where there is none", "%", lambda r: r.evaluation.qr_false.rate),
        Figure(
            "neutral photographs blocked (and near-duplicates)",
            "",
            lambda r: r.evaluation.neutral_blocked.hits,
            "0",
            lambda v: v == 0,
        ),
        Figure("evaluation images/s (in-process)", "/s", lambda r: _evaluated(r) / r.evaluation.seconds),
        Figure(
            f"images/s through the gateway (streams, {CLIENT_WINDOW} in flight)",
            "/s",
            lambda r: r.perf.gateway.rate,
        ),
        Figure(f"images/s, raw loop ({WORKERS} threads)", "/s", lambda r: r.perf.raw.rate),
        Figure(
            "gateway / raw loop images/s",
            "%",
            lambda r: ratio(r.perf.gateway.rate, r.perf.raw.rate),
            f">= {THROUGHPUT_SHARE_GOAL:.0%}",
            lambda v: v >= THROUGHPUT_SHARE_GOAL,
        ),
        Figure("gateway CPU while streaming", "cores", lambda r: r.perf.gateway.cores),
        Figure("raw loop CPU", "cores", lambda r: r.perf.raw.cores),
        Figure(f"unary p50, {SMALL[0]}x{SMALL[1]} photo", "ms", lambda r: r.perf.small.percentile(0.5)),
        Figure(f"unary p95, {SMALL[0]}x{SMALL[1]} photo", "ms", lambda r: r.perf.small.percentile(0.95)),
        Figure(f"unary p50, {LARGE[0]}x{LARGE[1]} photo", "ms", lambda r: r.perf.large.percentile(0.5)),
        Figure(f"unary p95, {LARGE[0]}x{LARGE[1]} photo", "ms", lambda r: r.perf.large.percentile(0.95)),
        Figure("gateway RSS once SERVING (models loaded)", "MiB", lambda r: r.perf.gateway_loaded_rss),
        Figure("gateway peak RSS after the throughput turns", "MiB", lambda r: r.perf.gateway_peak_rss),
        Figure("raw loop RSS, models loaded", "MiB", lambda r: r.perf.raw_loaded_rss),
        Figure("raw loop peak RSS after the throughput turns", "MiB", lambda r: r.perf.raw_peak_rss),
        Figure(
            f"stream of {sizes.perf.stream_images} without a client window: items failed",
            "",
            lambda r: r.perf.backlog.sent - r.perf.backlog.results,
            "0",
            lambda v: v == 0,
        ),
    ]


def _evaluated(result: LocalResult) -> int:
    return sum(result.evaluation.classes.values())


def _score_line(name: str, score: Score) -> str:
    line = f"  {name}: {score.hits} of {score.total}"
    if score.notes:
        shown = "; ".join(score.notes[:NOTES_SHOWN])
        more = len(score.notes) - NOTES_SHOWN
        line += f": {shown}" + (f" (and {more} more)" if more > 0 else "")
    return line


def _details(number: int, result: LocalResult) -> str:
    evaluation, perf = result.evaluation, result.perf
    classes = ", ".join(f"{count} {name}" for name, count in evaluation.classes.items())
    bands = ", ".join(
        f"{low}-{high} px {score.hits}/{score.total}"
        for (low, high), score in evaluation.keyword_by_band.items()
    )
    variants = ", ".join(
        f"{variant} {score.hits}/{score.total}" for variant, score in evaluation.library_by_variant.items()
    )
    backlog = perf.backlog
    errors: Counter[str] = sum((stream.errors for stream in perf.streams), Counter())
    call_errors = [stream.call_error for stream in perf.streams if stream.call_error]
    return "\n".join(
        [
            f"run {number} (seed {number}):",
            f"  evaluation: {_evaluated(result)} images in {evaluation.seconds:.0f} s: {classes}",
            _score_line("keywords found", evaluation.keyword),
            f"  keywords found by font size: {bands}",
            _score_line("keyword false positives", evaluation.keyword_false),
            _score_line("library near-duplicates matched to their sample", evaluation.library),
            f"  library near-duplicates matched by how they were made: {variants}",
            _score_line("library false matches", evaluation.library_false),
            _score_line("QR codes decoded", evaluation.qr),
            _score_line("QR codes reported where there is none", evaluation.qr_false),
            _score_line("neutral photographs blocked", evaluation.neutral_blocked),
            f"  throughput: gateway {perf.gateway.images} results in {perf.gateway.seconds:.1f} s "
            f"(stream errors {dict(errors) or 'none'}"
            + (f"; calls ended {call_errors}" if call_errors else "")
            + f"), raw loop {perf.raw.images} images in {perf.raw.seconds:.1f} s",
            f"  unary calls failed: {perf.small.failures} small, {perf.large.failures} large",
            f"  stream without a client window: {backlog.results} results of {backlog.sent} in "
            f"{backlog.last_answer - backlog.started:.1f} s, errors {dict(backlog.errors) or 'none'}"
            + (f"; call ended {backlog.call_error}" if backlog.call_error else "")
            + f"; a unary call right after: {perf.after_backlog}",
        ]
    )
