"""A loaded policy: each BizType's rules, ready to apply, and the version (a hash of its files)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from service.policy.detectors import Detector
from service.policy.imagelists import ExactList
from service.policy.keywords import KeywordIndex
from service.policy.pdq import NearList
from service.policy.thresholds import Thresholds

__all__ = ["Policy", "Rules"]


@dataclass(frozen=True)
class Rules:
    """What decides one BizType's answers."""

    thresholds: Thresholds = field(default_factory=lambda: Thresholds({}))
    keywords: KeywordIndex | None = None
    detectors: tuple[Detector, ...] = ()
    # Checked in order before any backend call: deny lists first, then allow lists.
    exact_lists: tuple[ExactList, ...] = ()
    # Checked after the exact lists (an exactly allowed image is not denied as a near-duplicate).
    near_lists: tuple[NearList, ...] = ()
    # A candidate beside these rules; it never changes an answer.
    shadow: Rules | None = None


@dataclass(frozen=True)
class Policy:
    version: str
    default: Rules
    by_biz_type: Mapping[str, Rules]
    # The policy file and every list it names: a change to any of them is a new policy.
    files: tuple[Path, ...] = ()

    def rules(self, biz_type: str) -> Rules:
        return self.by_biz_type.get(biz_type, self.default)
