"""One image through every check, as IMS-shaped result structures: the porn score, the text read with
its boxes, and QR codes.

The suggestions are the backend's own, as IMS's default policy gives its own: fixed, never configured
here. The gateway's policy (`MODERATION_POLICY_FILE`) re-decides them from the scores, matches the text
against its keyword lists and the image against its image lists, whichever backend answers.

CPU-bound and synchronous: the backend runs it in a worker thread. Animated images are checked frame
by frame (as sampled); the worst frame decides, and checking stops at the first Block.
"""

from __future__ import annotations

import hashlib
import io
import math

from moderation.v1.moderation_service_pb2 import (
    LabelDetail,
    LabelResult,
    Location,
    ModerateImageResponse,
    ObjectDetail,
    ObjectResult,
    OcrResult,
    OcrTextDetail,
    Suggestion,
)
from PIL import Image

from backends.local.cancel import CancelToken
from backends.local.frames import DEFAULT_LIMITS, FrameLimits, sample_frames
from backends.local.models import Box, Models

NORMAL = "Normal"
PASS, REVIEW, BLOCK = Suggestion.SUGGESTION_PASS, Suggestion.SUGGESTION_REVIEW, Suggestion.SUGGESTION_BLOCK
# The backend's own verdict on the porn score (open_nsfw's 0-100): the earlier releases' default policy.
PORN_REVIEW, PORN_BLOCK = 60, 85


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
    models: Models,
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
            result = analyze_frame(frame, models)
            if worst is None or _severity(result.suggestion, result.score) > _severity(
                worst.suggestion, worst.score
            ):
                worst = result
            if worst.suggestion == BLOCK:
                break
    assert worst is not None, "every image has a first frame"
    worst.file_md5 = hashlib.md5(content).hexdigest()
    return worst


def analyze_frame(frame: Image.Image, models: Models) -> ModerateImageResponse:
    response = ModerateImageResponse(
        label_results=[_porn_result(models.porn_score(frame))],
        ocr_results=[_ocr_result(frame, models)],
        object_results=[_qr_result(frame, models)],
    )
    _summarise(response)
    return response


def _porn_result(score: int) -> LabelResult:
    suggestion = BLOCK if score >= PORN_BLOCK else REVIEW if score >= PORN_REVIEW else PASS
    return LabelResult(
        scene="Porn",
        suggestion=suggestion,
        label="Porn" if suggestion != PASS else NORMAL,
        score=score,
        details=[LabelDetail(id=0, name="Porn", score=score)],
    )


def _ocr_result(frame: Image.Image, models: Models) -> OcrResult:
    """The text read, line by line with its box and confidence: what keyword lists are matched against."""
    lines = models.read_text(frame)
    return OcrResult(
        scene="OCR",
        suggestion=PASS,
        label=NORMAL,
        text="\n".join(line.text for line in lines),
        details=[
            OcrTextDetail(text=line.text, label=NORMAL, location=_location(line.box), rate=line.confidence)
            for line in lines
        ],
    )


def _qr_result(frame: Image.Image, models: Models) -> ObjectResult:
    codes = models.qr_codes(frame)
    if not codes:
        return ObjectResult(scene="QrCode", suggestion=PASS, label=NORMAL)
    # IMS reports QR codes as advertising, and blocks them.
    return ObjectResult(
        scene="QrCode",
        suggestion=BLOCK,
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
