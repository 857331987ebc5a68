"""The policy file's schema (`MODERATION_POLICY_FILE`), validated whole by pydantic.

It extends the local backend's policy format: `[default]`, `[default.thresholds]`,
`[biz_types.<name>]` inheriting `[default]`, `Porn = { review = 50, block = 80 }`; and adds keyword
lists, detectors, image lists and a shadow candidate per BizType. Paths are relative to the file.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.validation import BIZ_TYPE

__all__ = [
    "Action",
    "DetectorConfig",
    "DetectorKind",
    "ImageListConfig",
    "KeywordListConfig",
    "PolicyDocument",
    "RuleSet",
    "ThresholdConfig",
]

# What a matched rule does to the answer.
Action = Literal["review", "block"]
# The local backend's checks (kept valid here: a local policy file is a gateway policy file).
Check = Literal["porn", "ocr", "qrcode", "library"]
DetectorKind = Literal["phone", "url"]
LABEL_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,47}$"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class Pair(_Strict):
    """Review at or above `review`, block at or above `block`, on the 0-100 score; 101 never triggers."""

    review: int = Field(ge=0, le=101)
    block: int = Field(ge=0, le=101)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.review > self.block:
            raise ValueError("review must not be above block")
        return self


class ThresholdConfig(Pair):
    # Sub-labels (e.g. Porn's SexBehavior) judged by their own pair; the others by the label's.
    sub_labels: dict[str, Pair] = Field(default_factory=dict)


class DetectorConfig(_Strict):
    action: Action
    # The label the answer takes when the detector decides it (the cloud backend files contact details
    # under Ad).
    label: str = Field("Ad", pattern=LABEL_PATTERN)
    # Phone numbers written without a country code are read as numbers of these regions.
    regions: tuple[str, ...] = Field(("CN", "US"), min_length=1)


class RuleSet(_Strict):
    """`[default]` or `[biz_types.<name>]`: what a BizType's answers are decided by. Unset keys inherit
    `[default]`'s; a label's threshold table replaces the inherited one whole."""

    checks: tuple[Check, ...] | None = None
    thresholds: dict[str, ThresholdConfig] = Field(default_factory=dict)
    keyword_lists: tuple[str, ...] | None = None
    image_lists: tuple[str, ...] | None = None
    detectors: dict[DetectorKind, DetectorConfig] | None = None
    # A candidate run beside this policy on live traffic: it never changes an answer.
    shadow: ShadowSet | None = None


class ShadowSet(_Strict):
    """A candidate policy: it inherits the live one and overrides what it names."""

    thresholds: dict[str, ThresholdConfig] = Field(default_factory=dict)
    keyword_lists: tuple[str, ...] | None = None
    detectors: dict[DetectorKind, DetectorConfig] | None = None


class KeywordListConfig(_Strict):
    """A keyword file: UTF-8, one entry a line; blank lines and lines starting with `#` are skipped."""

    file: str = Field(min_length=1)
    label: str = Field(pattern=LABEL_PATTERN)
    action: Action


class ImageListConfig(_Strict):
    """An image file: one hash a line in hex, optionally followed by the entry's id; `#` comments.

    `allow` and `deny` hold SHA-256 digests; `near_deny` holds PDQ hashes and denies images within
    `distance` bits of one (it never allows)."""

    file: str = Field(min_length=1)
    kind: Literal["allow", "deny", "near_deny"]
    label: str = Field("Custom", pattern=LABEL_PATTERN)
    # At most 47: the look-up searches two differing bits per 16-bit chunk.
    distance: int = Field(31, ge=0, le=47)
    quality: int = Field(50, ge=0, le=100)


class PolicyDocument(_Strict):
    default: RuleSet = Field(default_factory=RuleSet)
    # Names as requests spell them (`biz_type`: 3 to 32 of A-Z a-z 0-9 _), so a typo cannot hide.
    biz_types: dict[Annotated[str, Field(pattern=f"^{BIZ_TYPE.pattern}$")], RuleSet] = Field(
        default_factory=dict
    )
    keyword_lists: dict[str, KeywordListConfig] = Field(default_factory=dict)
    image_lists: dict[str, ImageListConfig] = Field(default_factory=dict)
