"""One image through the checks its policy names, as IMS-shaped result structures.

CPU-bound and synchronous: the backend runs it in a worker thread. Animated images are checked frame
by frame (as sampled); the worst frame decides, and checking stops at the first Block.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass

from moderation.v1.moderation_service_pb2 import (
    HitPosition,
    LabelDetail,
    LabelResult,
    LibDetail,
    LibResult,
    Location,
    ModerateImageResponse,
    ObjectDetail,
    ObjectResult,
    OcrHitInfo,
    OcrResult,
    OcrTextDetail,
    Suggestion,
)
from PIL import Image

from backends.local.cancel import CancelToken
from backends.local.frames import DEFAULT_LIMITS, FrameLimits, sample_frames
from backends.local.imagelib import ImageLibrary, Kind, Match
from backends.local.keywords import KeywordMatcher
from backends.local.models import Box, Models
from backends.local.policy import Policy

NORMAL = "Normal"
PASS, REVIEW, BLOCK = Suggestion.SUGGESTION_PASS, Suggestion.SUGGESTION_REVIEW, Suggestion.SUGGESTION_BLOCK


@dataclass(frozen=True)
class Checks:
    models: Models
    keywords: KeywordMatcher
    library: ImageLibrary


def _location(box: Box) -> Location:
    return Location(x=box.x, y=box.y, width=box.width, height=box.height)


def _severity(suggestion: Suggestion.ValueType, score: int) -> tuple[int, int]:
    order = {PASS: 0, REVIEW: 1, BLOCK: 2}
    return order.get(suggestion, 2), score


def analyze_image(
    content: bytes,
    *,
    interval: int,
    max_frames: int,
    policy: Policy,
    checks: Checks,
    limits: FrameLimits = DEFAULT_LIMITS,
    token: CancelToken | None = None,
) -> ModerateImageResponse:
    """Raises `LimitExceeded` before decoding a frame over a limit, `Cancelled` between frames once
    `token` says the call is over, and Pillow's errors for undecodable data."""
    worst: ModerateImageResponse | None = None
    token = token or CancelToken(math.inf)
    with Image.open(io.BytesIO(content)) as image:
        frames = sample_frames(image, interval=interval, max_frames=max_frames, limits=limits, token=token)
        for _, frame in frames:
            result = analyze_frame(frame, policy, checks)
            if worst is None or _severity(result.suggestion, result.score) > _severity(
                worst.suggestion, worst.score
            ):
                worst = result
            if worst.suggestion == BLOCK:
                break
    assert worst is not None, "every image has a first frame"
    worst.file_md5 = hashlib.md5(content).hexdigest()
    return worst


def analyze_frame(frame: Image.Image, policy: Policy, checks: Checks) -> ModerateImageResponse:
    response = ModerateImageResponse()
    if "library" in policy.checks:
        match = checks.library.best_match(frame)
        response.lib_results.append(_lib_result(match))
        if match is not None:
            # An allow sample vouches for the image; a deny sample condemns it: nothing else is checked.
            return _decided_by_library(response, match)
    if "porn" in policy.checks:
        response.label_results.append(_porn_result(checks.models.porn_score(frame), policy))
    if "ocr" in policy.checks:
        response.ocr_results.append(_ocr_result(frame, policy, checks))
    if "qrcode" in policy.checks:
        response.object_results.append(_qr_result(frame, policy, checks))
    _summarise(response)
    return response


def _decided_by_library(response: ModerateImageResponse, match: Match) -> ModerateImageResponse:
    allowed = match.sample.kind is Kind.ALLOW
    response.suggestion = PASS if allowed else BLOCK
    response.label = NORMAL if allowed else match.sample.label
    response.score = match.score
    return response


def _lib_result(match: Match | None) -> LibResult:
    if match is None:
        return LibResult(scene="Similar", suggestion=PASS, label=NORMAL)
    sample = match.sample
    allowed = sample.kind is Kind.ALLOW
    return LibResult(
        scene="Similar",
        suggestion=PASS if allowed else BLOCK,
        label=sample.label,
        score=match.score,
        details=[
            LibDetail(
                id=0,
                lib_id=sample.kind.value,
                lib_name=f"{sample.kind.value} samples",
                image_id=sample.image_id,
                label=sample.label,
                score=match.score,
            )
        ],
    )


def _porn_result(score: int, policy: Policy) -> LabelResult:
    suggestion = policy.suggestion("Porn", score)
    return LabelResult(
        scene="Porn",
        suggestion=suggestion,
        label="Porn" if suggestion != PASS else NORMAL,
        score=score,
        details=[LabelDetail(id=0, name="Porn", score=score)],
    )


def _ocr_result(frame: Image.Image, policy: Policy, checks: Checks) -> OcrResult:
    lines = checks.models.read_text(frame)
    result = OcrResult(
        scene="OCR", suggestion=PASS, label=NORMAL, text="\n".join(line.text for line in lines)
    )
    for line in lines:
        detail = OcrTextDetail(
            text=line.text, label=NORMAL, location=_location(line.box), rate=line.confidence
        )
        hits = checks.keywords.find(line.text)
        if hits:
            first = hits[0].library
            detail.label, detail.lib_id, detail.lib_name, detail.score = (
                first.label,
                first.id,
                first.name,
                100,
            )
            detail.keywords.extend(dict.fromkeys(hit.keyword for hit in hits if hit.library is first))
            detail.hit_infos.extend(
                OcrHitInfo(
                    type="Keyword",
                    keyword=hit.keyword,
                    lib_name=hit.library.name,
                    label=hit.library.label,
                    positions=[HitPosition(start=hit.start, end=hit.end)],
                )
                for hit in hits
            )
            suggestion = policy.suggestion(first.label, detail.score)
            if _severity(suggestion, detail.score) > _severity(result.suggestion, result.score):
                result.suggestion, result.label, result.score = suggestion, first.label, detail.score
        result.details.append(detail)
    return result


def _qr_result(frame: Image.Image, policy: Policy, checks: Checks) -> ObjectResult:
    codes = checks.models.qr_codes(frame)
    if not codes:
        return ObjectResult(scene="QrCode", suggestion=PASS, label=NORMAL)
    return ObjectResult(
        scene="QrCode",
        suggestion=policy.suggestion("Ad", 100),
        label="Ad",
        sub_label="QrCode",
        score=100,
        names=["QRCODE"],
        details=[
            ObjectDetail(
                id=i,
                name="QRCODE",
                value=code.value,
                score=100,
                location=_location(code.box),
                sub_label="QrCode",
            )
            for i, code in enumerate(codes)
        ],
    )


def _summarise(response: ModerateImageResponse) -> None:
    """The top-level verdict: the most severe result structure, as IMS reports it."""
    response.suggestion, response.label, response.score = PASS, NORMAL, 0
    candidates: list[LabelResult | OcrResult | ObjectResult] = [
        *response.label_results,
        *response.ocr_results,
        *response.object_results,
    ]
    for result in candidates:
        if _severity(result.suggestion, result.score) > _severity(response.suggestion, response.score) and (
            result.suggestion != PASS
        ):
            response.suggestion, response.label, response.score = (
                result.suggestion,
                result.label,
                result.score,
            )
            response.sub_label = result.sub_label
