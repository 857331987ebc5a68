"""Moderation policies per BizType, from a TOML file: which checks run and the Review/Block thresholds.

    [default]
    checks = ["porn", "ocr", "qrcode", "library"]

    [default.thresholds]
    Porn = { review = 50, block = 80 }

    [biz_types.kids_app]            # inherits [default], overrides what it names
    thresholds.Porn = { review = 20, block = 50 }

A finding is a label with a 0-100 score; its suggestion is Block at or above `block`, Review at or above
`review`, Pass below. Labels without thresholds use `[default.thresholds]._other`, then 50/90.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from moderation.v1.moderation_service_pb2 import Suggestion

from backends.local.settings import DEFAULT_POLICY_FILE
from common.files import MIB, UnreadableFile, read_text_file

# A policy for each of thousands of BizTypes is well under this.
POLICY_FILE_LIMIT = MIB
CHECKS = frozenset({"porn", "ocr", "qrcode", "library"})


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class Thresholds:
    review: int
    block: int

    def suggestion(self, score: int) -> Suggestion.ValueType:
        if score >= self.block:
            return Suggestion.SUGGESTION_BLOCK
        if score >= self.review:
            return Suggestion.SUGGESTION_REVIEW
        return Suggestion.SUGGESTION_PASS


FALLBACK = Thresholds(review=50, block=90)


@dataclass(frozen=True)
class Policy:
    checks: frozenset[str] = CHECKS
    thresholds: dict[str, Thresholds] = field(default_factory=dict)

    def suggestion(self, label: str, score: int) -> Suggestion.ValueType:
        thresholds = self.thresholds.get(label) or self.thresholds.get("_other") or FALLBACK
        return thresholds.suggestion(score)


@dataclass(frozen=True)
class Policies:
    default: Policy
    by_biz_type: dict[str, Policy]

    def for_biz_type(self, biz_type: str) -> Policy:
        return self.by_biz_type.get(biz_type, self.default)


def load_policies(path: Path = DEFAULT_POLICY_FILE) -> Policies:
    try:
        document = tomllib.loads(read_text_file(path, POLICY_FILE_LIMIT))
    except (UnreadableFile, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: {exc}") from None
    except RecursionError:
        raise PolicyError(f"{path}: nested too deeply") from None
    default = _policy(document.get("default", {}), Policy(), f"{path} [default]")
    by_biz_type = {
        name: _policy(table, default, f"{path} [biz_types.{name}]")
        for name, table in _table(document.get("biz_types", {}), f"{path} [biz_types]").items()
    }
    return Policies(default, by_biz_type)


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(f"{where} must be a table")
    return value


def _policy(table: Any, base: Policy, where: str) -> Policy:
    table = _table(table, where)
    unknown = set(table) - {"checks", "thresholds"}
    if unknown:
        raise PolicyError(f"{where}: unknown keys {sorted(unknown)}")
    policy = base
    if "checks" in table:
        checks = table["checks"]
        if not isinstance(checks, list) or not set(checks) <= CHECKS:
            raise PolicyError(f"{where}: checks must be a list drawn from {sorted(CHECKS)}")
        policy = replace(policy, checks=frozenset(checks))
    thresholds = dict(policy.thresholds)
    for label, value in _table(table.get("thresholds", {}), f"{where}.thresholds").items():
        value = _table(value, f"{where}.thresholds.{label}")
        review, block = value.get("review"), value.get("block")
        if not (isinstance(review, int) and isinstance(block, int) and 0 <= review <= block <= 101):
            raise PolicyError(f"{where}.thresholds.{label}: need integers 0 <= review <= block <= 101")
        thresholds[label] = Thresholds(review, block)
    return replace(policy, thresholds=thresholds)
