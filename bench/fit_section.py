"""The fit section: what share of images IMS cannot take the gateway now moderates, at what cost."""

from __future__ import annotations

import functools

from bench import fit
from bench.fit import FitResult
from bench.fit_corpus import FULL, QUICK, Sizes
from bench.report import Figure
from bench.sections import Progress, Section

MIB = 1024 * 1024
# The fitting stage's memory budget (1 GiB, service.fitting.stage), the downloads held and the
# gateway's own footprint.
RSS_GOAL = 1536 * MIB


def section(quick: bool) -> Section[FitResult]:
    sizes = QUICK if quick else FULL
    return Section(
        name="fit",
        header=_header(sizes),
        measure=functools.partial(_measure, sizes),
        details=run_details,
        figures=figures(),
    )


async def _measure(sizes: Sizes, number: int, progress: Progress) -> FitResult:
    return await fit.measure(sizes, number, progress)


def _header(sizes: Sizes) -> str:
    return "\n".join(
        [
            "IMS emulator (a process, enforcing IMS's limits; magenta ink reads as ad text); "
            "a loopback origin",
            f"corpus, each sent once by URL: a {sizes.photo_pixels[0]}x{sizes.photo_pixels[1]} noise "
            f"JPEG (MBs), a {sizes.huge[0]}x{sizes.huge[1]} photo, a "
            f"{sizes.screenshot[0]}x{sizes.screenshot[1]} screenshot with text, a 2-page TIFF, an AVIF, "
            "a JPEG behind a hotlink check, the same behind a redirect",
            "fitted: routing file with fetch_headers (Referer), fetch = gateway (tencent's default); "
            "passed on: MODERATION_FETCH=backend (IMS downloads the URL)",
            f"in flight: {sizes.in_flight} of the {sizes.huge[0]}x{sizes.huge[1]} photo at once on a fresh "
            "gateway: its CPU per image and peak RSS (VmHWM)",
        ]
    )


def figures() -> list[Figure[FitResult]]:
    return [
        Figure(
            "share moderated, fitted", "%", lambda r: FitResult.share(r.fitted), "100 %", lambda v: v >= 1.0
        ),
        Figure("share moderated, URL passed to IMS", "%", lambda r: FitResult.share(r.passed_on)),
        Figure(
            "billed calls per moderated image, fitted", ".3", lambda r: FitResult.billed_per_image(r.fitted)
        ),
        Figure("screenshot tiles (billed calls)", "", lambda r: r.screenshot_tiles),
        Figure(
            "screenshot text verdict BLOCK, found once", "", lambda r: r.text_found, "1", lambda v: v == 1
        ),
        Figure(
            "screenshot text mapped back, error (px)",
            "",
            lambda r: r.text_offset,
            "<= 16 px",
            lambda v: v <= 16,
        ),
        Figure("gateway CPU per fitted photo", "ms", lambda r: r.cpu_per_image),
        Figure(
            "gateway peak RSS, photos in flight",
            "MiB",
            lambda r: r.rss_peak,
            f"<= {RSS_GOAL // MIB} MiB",
            lambda v: v <= RSS_GOAL,
        ),
        Figure("gateway RSS before", "MiB", lambda r: r.rss_before),
    ]


def run_details(number: int, result: FitResult) -> str:
    lines = [f"run {number}:"]
    for fitted, passed in zip(result.fitted, result.passed_on, strict=True):
        if fitted.answer is not None:
            n = fitted.answer.normalization
            done = (
                f"{n.original_width}x{n.original_height} -> {n.sent_width}x{n.sent_height} "
                f"{n.reencoded or 'as sent'}, {n.tiles} tiles, {fitted.billed} billed"
            )
        else:
            done = f"FAILED {fitted.error[:120]}"
        before = "moderated" if passed.moderated else f"failed ({passed.error[:90]})"
        lines.append(f"  {fitted.name}: fitted {done}; URL passed to IMS: {before}")
    lines.append(
        f"  {result.in_flight} in flight: {result.wall_in_flight:.1f} s wall, "
        f"{result.cpu_per_image * 1000:.0f} ms CPU each, RSS {result.rss_before / MIB:.0f} -> peak "
        f"{result.rss_peak / MIB:.0f} MiB"
    )
    return "\n".join(lines)
