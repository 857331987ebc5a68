"""The local backend's evaluation: every case of `local_cases` through an in-process `LocalBackend`, its
text matched by the gateway's keyword lists and the image by the gateway's near-duplicate deny lists
(the deny samples, folded as the deprecated MODERATION_LOCAL_DENY_DIR is), scored per check.

Each image is moderated once and every check's figures read that one answer and that one list look-up.
A check's negatives are all the images without what it looks for: so text and QR images count as
library negatives, photographs and QR images as keyword negatives, and text and photographs as QR
negatives, besides the classes made for each check.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse, Suggestion

from backends.local.backend import LocalBackend
from backends.local.models import Models
from backends.local.settings import LocalSettings
from bench.local_cases import (
    LIBRARY_VARIANT,
    Case,
    CaseMaker,
    KeywordFinder,
    Library,
    photographs,
    write_keyword_policy,
)
from bench.report import share
from service.image_hash import ImageHash
from service.policy.gate import listed
from service.policy.imagelists import ListHit
from service.policy.keywords import read_text
from service.policy.legacy import LocalSources
from service.policy.loading import load_policy

# Generous: only a hung backend takes this long for one image.
CASE_TIMEOUT = 120.0
# Keyword recall is also reported by font size, to show where OCR loses text.
FONT_BANDS = ((20, 27), (28, 37), (38, 48))


@dataclass(frozen=True)
class EvalSizes:
    # Per class: this many images with what is looked for, as many without.
    text_images: int
    qr_images: int
    # The share of scikit-image's photographs put in the library.
    library_share: float
    noise_images: int


@dataclass
class Score:
    hits: int = 0
    total: int = 0
    # The positives missed, or the negatives flagged, each with what the backend said.
    notes: list[str] = field(default_factory=list)

    def count(self, hit: bool, note: str | None = None) -> None:
        self.total += 1
        self.hits += hit
        if note is not None:
            self.notes.append(note)

    @property
    def rate(self) -> float:
        return share(self.hits, self.total)


@dataclass
class EvalResult:
    classes: Counter[str] = field(default_factory=Counter)
    keyword: Score = field(default_factory=Score)
    keyword_false: Score = field(default_factory=Score)
    keyword_by_band: dict[tuple[int, int], Score] = field(
        default_factory=lambda: {band: Score() for band in FONT_BANDS}
    )
    qr: Score = field(default_factory=Score)
    qr_false: Score = field(default_factory=Score)
    library: Score = field(default_factory=Score)
    library_by_variant: dict[str, Score] = field(default_factory=dict)
    library_false: Score = field(default_factory=Score)
    neutral_blocked: Score = field(default_factory=Score)
    # Wall time of the moderation alone, without making the images.
    seconds: float = 0.0


async def evaluate(seed: int, sizes: EvalSizes, models: Models) -> EvalResult:
    with tempfile.TemporaryDirectory(prefix="bench-local-") as folder:
        root = Path(folder)
        library = Library(root / "keywords", root / "deny")
        library.deny.mkdir()
        finder = KeywordFinder(write_keyword_policy(library.keywords))
        maker = CaseMaker(seed, photographs(), finder, sizes.library_share)
        cases = [
            *maker.text_cases(sizes.text_images),
            *maker.qr_cases(sizes.qr_images),
            *maker.library_cases(library),
            *maker.noise_cases(sizes.noise_images),
        ]
        rules = load_policy(None, local=LocalSources(None, None, None, library.deny, ())).default
        hits = [await listed(rules, ImageHash(case.content)) for case in cases]
        backend = LocalBackend(LocalSettings(), models=models)
        await backend.start()
        try:
            started = time.perf_counter()
            # The backend's own worker pool bounds how many run at once.
            answers = await asyncio.gather(
                *(
                    backend.moderate(ModerateImageRequest(content=c.content), timeout=CASE_TIMEOUT)
                    for c in cases
                )
            )
            seconds = time.perf_counter() - started
        finally:
            await backend.aclose()
    result = EvalResult(seconds=seconds)
    for case, answer, hit in zip(cases, answers, hits, strict=True):
        _score(result, case, answer, finder, hit)
    return result


def _score(
    result: EvalResult, case: Case, answer: ModerateImageResponse, finder: KeywordFinder, hit: ListHit | None
) -> None:
    result.classes[case.group] += 1
    # The gateway's policy matches its keyword lists against the text the backend read.
    keywords = finder.find(read_text(answer))
    if case.keyword is not None:
        found = case.keyword in keywords
        note = None if found else f"{case.name} ({case.font_px} px): read {_read(answer)!r}"
        result.keyword.count(found, note)
        band = next(b for b in FONT_BANDS if b[0] <= case.font_px <= b[1])
        result.keyword_by_band[band].count(found)
    elif answer.ocr_results:
        result.keyword_false.count(bool(keywords), f"{case.name}: {sorted(keywords)}" if keywords else None)

    values = {detail.value for objects in answer.object_results for detail in objects.details}
    if case.qr is not None:
        found = case.qr in values
        result.qr.count(found, None if found else f"{case.name}: decoded {sorted(values)}")
    elif answer.object_results:
        result.qr_false.count(bool(values), f"{case.name}: {sorted(values)}" if values else None)

    matched = hit.entry if hit is not None else None
    if case.group == LIBRARY_VARIANT:
        found = matched == case.sample
        result.library.count(found, None if found else f"{case.name}: matched {matched}")
        result.library_by_variant.setdefault(case.variant, Score()).count(found)
    elif case.sample is None:
        result.library_false.count(
            matched is not None, f"{case.name}: matched {matched}" if matched else None
        )

    if case.neutral:
        blocked = answer.suggestion == Suggestion.SUGGESTION_BLOCK or matched is not None
        note = f"{case.name}: {answer.label} {answer.score}" if blocked else None
        result.neutral_blocked.count(blocked, note)


def _read(answer: ModerateImageResponse) -> str:
    return " | ".join(ocr.text.replace("\n", " | ") for ocr in answer.ocr_results)
