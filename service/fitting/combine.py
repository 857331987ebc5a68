"""One answer from the answers for an image's pieces, in the original image's coordinates.

A fitted image's positions (OCR text, objects) are in the pixels of what was sent: they are mapped
back through the piece's own scale, its tile's offset and the plan's scale. Of several tiles, the
worst suggestion wins (BLOCK over REVIEW over PASS, then the higher score) and gives the answer's
label; every tile's OCR text and objects are kept, each scene's label results are the worst of any
tile's, and `attempts` counts every tile's calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from moderation.v1.moderation_service_pb2 import (
    LabelResult,
    Location,
    ModerateImageResponse,
    Normalization,
    Suggestion,
)

from service.fitting.plan import Plan
from service.fitting.render import Piece

__all__ = ["combined"]

_SEVERITY = {Suggestion.SUGGESTION_BLOCK: 3, Suggestion.SUGGESTION_REVIEW: 2, Suggestion.SUGGESTION_PASS: 1}


def combined(
    answers: Sequence[ModerateImageResponse], pieces: Sequence[Piece], plan: Plan
) -> ModerateImageResponse:
    for answer, piece in zip(answers, pieces, strict=True):
        _map_back(answer, piece, plan)
    worst = max(answers, key=lambda a: (_SEVERITY.get(a.suggestion, 0), a.score))
    result = ModerateImageResponse()
    result.CopyFrom(worst)
    if len(answers) > 1:
        del result.object_results[:], result.ocr_results[:], result.label_results[:]
        result.label_results.extend(_worst_per_scene(answers))
        for answer in answers:
            result.object_results.extend(answer.object_results)
            result.ocr_results.extend(answer.ocr_results)
        _drop_seen_twice(result)
        result.attempts = sum(a.attempts for a in answers)
        result.fallback = any(a.fallback for a in answers)
    first = pieces[0]
    result.normalization.CopyFrom(
        Normalization(
            original_width=plan.width,
            original_height=plan.height,
            sent_width=first.width,
            sent_height=first.height,
            reencoded=first.reencoded,
            tiles=len(pieces) if plan.tiles else 0,
        )
    )
    return result


def _worst_per_scene(answers: Sequence[ModerateImageResponse]) -> list[LabelResult]:
    worst: dict[str, LabelResult] = {}
    for answer in answers:
        for label in answer.label_results:
            seen = worst.get(label.scene)
            if seen is None or (_SEVERITY.get(label.suggestion, 0), label.score) > (
                _SEVERITY.get(seen.suggestion, 0),
                seen.score,
            ):
                worst[label.scene] = label
    return list(worst.values())


def _map_back(answer: ModerateImageResponse, piece: Piece, plan: Plan) -> None:
    """Every location of `answer`, from the piece's pixels into the original image's."""
    tile_width, tile_height = (
        plan.tile_size(piece.tile) if piece.tile else (plan.scaled_width, plan.scaled_height)
    )
    to_original = plan.width / plan.scaled_width
    scale_x = tile_width / piece.width * to_original
    scale_y = tile_height / piece.height * to_original
    offset = piece.tile.start * to_original if piece.tile else 0.0
    offset_x, offset_y = (0.0, offset) if plan.tall else (offset, 0.0)
    if (scale_x, scale_y, offset) == (1.0, 1.0, 0.0):
        return  # the image as it came: its pixels are the original's
    for location in _locations(answer):
        location.x = location.x * scale_x + offset_x
        location.y = location.y * scale_y + offset_y
        location.width *= scale_x
        location.height *= scale_y


def _drop_seen_twice(result: ModerateImageResponse) -> None:
    """A finding in the overlap of two tiles is reported by both: the second report is dropped."""
    seen: list[tuple[str, Location]] = []

    def first_time(what: str, location: Location) -> bool:
        if any(what == label and _same_place(location, place) for label, place in seen):
            return False
        seen.append((what, location))
        return True

    for ocr in result.ocr_results:
        kept_texts = [d for d in ocr.details if first_time(f"ocr:{d.label}:{d.text}", d.location)]
        _replace(ocr.details, kept_texts)
    for found in result.object_results:
        kept_objects = [d for d in found.details if first_time(f"object:{d.name}:{d.value}", d.location)]
        _replace(found.details, kept_objects)


def _replace(details: Any, kept: list[Any]) -> None:
    copies = [type(detail)() for detail in kept]
    for copy, detail in zip(copies, kept, strict=True):
        copy.CopyFrom(detail)
    del details[:]
    details.extend(copies)


def _same_place(a: Location, b: Location) -> bool:
    """More than half of the smaller box is shared (a tile may see the finding a few pixels off)."""
    width = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
    height = min(a.y + a.height, b.y + b.height) - max(a.y, b.y)
    smaller = min(a.width * a.height, b.width * b.height)
    return width > 0 and height > 0 and width * height > smaller / 2


def _locations(answer: ModerateImageResponse) -> list[Location]:
    found = [d.location for r in answer.object_results for d in r.details if d.HasField("location")]
    found += [d.location for r in answer.ocr_results for d in r.details if d.HasField("location")]
    return found
