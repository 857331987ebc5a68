"""The `IMSEMU:` markers that choose a moderation result (the grammar is in the package docstring)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ImsError

PREFIX = "IMSEMU:"
SUGGESTIONS = ("Pass", "Review", "Block")  # in rising severity
SOURCES = ("label", "object", "ocr", "lib")
# Sub-labels that object detection, not classification, reports (the ObjectResults scenes of IMS).
OBJECT_SCENES = frozenset({"QrCode", "AppLogo", "PolityFace", "MapRecognition"})
# Labels IMS finds mostly in text inside the image.
TEXT_LABELS = frozenset({"Ad", "Abuse"})

# A candidate runs until the first byte that cannot belong to a marker; it is then parsed strictly,
# so a typo fails loudly instead of silently passing the image.
_CANDIDATE = re.compile(rb"IMSEMU:([A-Za-z0-9_:]*)")
_FIELDS = re.compile(
    r"(?P<suggestion>[A-Za-z]+):(?P<label>[A-Za-z]+):(?P<sub_label>[A-Za-z0-9_]*):(?P<score>[0-9]{1,3})"
    r"(?::(?P<source>[a-z]+))?"
)


@dataclass(frozen=True)
class Hit:
    """One marker: the verdict it asks for and the result structure that reports it."""

    suggestion: str
    label: str
    sub_label: str
    score: int
    source: str

    @property
    def severity(self) -> tuple[int, int]:
        return SUGGESTIONS.index(self.suggestion), self.score


def default_source(label: str, sub_label: str) -> str:
    if sub_label in OBJECT_SCENES:
        return "object"
    if label in TEXT_LABELS:
        return "ocr"
    return "label"


def format_marker(
    suggestion: str, label: str, sub_label: str = "", score: int = 100, source: str | None = None
) -> str:
    """The marker text; `source` is written only when it differs from the default routing."""
    text = f"{PREFIX}{suggestion}:{label}:{sub_label}:{score}"
    if source is not None and source != default_source(label, sub_label):
        text += f":{source}"
    return text


def _parse(text: str) -> Hit:
    fields = _FIELDS.fullmatch(text)
    problem = "" if fields else "expected <Suggestion>:<Label>:<SubLabel>:<Score>[:<source>]"
    if fields and fields["suggestion"] not in SUGGESTIONS:
        problem = f"Suggestion must be one of {', '.join(SUGGESTIONS)}"
    elif fields and int(fields["score"]) > 100:
        problem = "Score must be 0..100"
    elif fields and fields["source"] is not None and fields["source"] not in SOURCES:
        problem = f"source must be one of {', '.join(SOURCES)}"
    if fields is None or problem:
        # InternalError, because it is the test's image, not the client, that is wrong.
        raise ImsError("InternalError", f"ims-emulator: malformed marker `{PREFIX}{text}`: {problem}")
    label, sub_label = fields["label"], fields["sub_label"]
    return Hit(
        suggestion=fields["suggestion"],
        label=label,
        sub_label=sub_label,
        score=int(fields["score"]),
        source=fields["source"] or default_source(label, sub_label),
    )


def find_hits(image: bytes) -> list[Hit]:
    """Every marker in the image bytes, in order of appearance."""
    return [_parse(match[1].decode("ascii")) for match in _CANDIDATE.finditer(image)]
