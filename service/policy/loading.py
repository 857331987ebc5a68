"""Reading the policy file and the lists it names into a `Policy`, every problem reported at once."""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from backends.options import describe_errors
from common.files import MIB, UnreadableFile, read_regular_file, read_text_file
from service.policy.detectors import Detector
from service.policy.imagelists import DIGEST_HEX, ExactList, parse_entries
from service.policy.keywords import KeywordIndex, KeywordList, normalise
from service.policy.legacy import LocalLibrary, LocalSources, action_for, read_libraries, read_samples
from service.policy.model import (
    DetectorConfig,
    DetectorKind,
    PolicyDocument,
    RuleSet,
    ShadowSet,
    ThresholdConfig,
)
from service.policy.pdq import HASH_HEX, NearList
from service.policy.rules import Policy, Rules
from service.policy.thresholds import Thresholds

__all__ = ["MAX_KEYWORDS", "PolicyError", "PolicySource", "load_policy"]

MAX_KEYWORDS = 100_000


class PolicyError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid policy:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class _Effective:
    """A BizType's rule set with `[default]`'s filled in."""

    thresholds: Mapping[str, ThresholdConfig]
    keyword_lists: tuple[str, ...]
    image_lists: tuple[str, ...]
    detectors: Mapping[DetectorKind, DetectorConfig]
    shadow: ShadowSet | None


def _inherit(rules: RuleSet, base: _Effective) -> _Effective:
    return _Effective(
        {**base.thresholds, **rules.thresholds},
        base.keyword_lists if rules.keyword_lists is None else rules.keyword_lists,
        base.image_lists if rules.image_lists is None else rules.image_lists,
        base.detectors if rules.detectors is None else rules.detectors,
        base.shadow if rules.shadow is None else rules.shadow,
    )


_EMPTY = _Effective({}, (), (), {}, None)
# Regular files only, read without blocking (a FIFO or /dev/zero is refused), under these caps: the
# policy is a page of TOML; a list holds up to a million 64-character hashes or 100,000 keywords.
POLICY_FILE_LIMIT = MIB
LIST_FILE_LIMIT = 128 * MIB


@dataclass(frozen=True)
class PolicySource:
    """Where the policy is read from, at start and at each reload: the policy file, and what the local
    backends' deprecated settings fold into it (`service.policy.legacy`)."""

    file: Path | None
    local: LocalSources | None = None

    @property
    def deprecated(self) -> tuple[str, ...]:
        """The deprecated settings in use."""
        return self.local.named_by if self.local is not None else ()

    def load(self) -> Policy:
        return load_policy(self.file, local=self.local)


def load_policy(path: Path | None, *, local: LocalSources | None = None) -> Policy:
    """The policy in `path` (None: no rules of its own), with the local backends' deprecated keyword
    libraries and sample folders folded in; `PolicyError` listing every problem of the files."""
    try:
        raw = read_regular_file(path, POLICY_FILE_LIMIT) if path is not None else b""
        table = tomllib.loads(raw.decode("utf-8"))
    except (UnreadableFile, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError([f"{path}: {exc}"]) from None
    except RecursionError:
        raise PolicyError([f"{path}: nested too deeply"]) from None
    problems = [f"{path} {problem}" for problem in _unknown_names(table)]
    try:
        document = PolicyDocument.model_validate(table)
    except ValidationError as error:
        raise PolicyError(describe_errors(error, str(path)) + problems) from None
    if problems:
        raise PolicyError(problems)
    contents = [raw]
    folder = path.parent if path is not None else Path()
    keyword_dir = local.keyword_dir if local is not None else None
    libraries = read_libraries(keyword_dir, problems) if keyword_dir is not None else []
    problems += [
        f"{library.path}: the library id {library.id!r} is also a [keyword_lists] name"
        for library in libraries
        if library.id in document.keyword_lists
    ]
    contents += [library.content for library in libraries]
    samples = read_samples(local.allow_dir if local else None, local.deny_dir if local else None, problems)
    contents += [samples.content] if samples.files else []
    keyword_lists = {}
    for name, config in document.keyword_lists.items():
        text = _read(folder / config.file, f"keyword_lists.{name}", problems)
        contents.append(text.encode())
        entries = _keywords(text, f"keyword_lists.{name} ({config.file})", problems)
        keyword_lists[name] = KeywordList(name, config.label, config.action, entries)
    exact_lists, near_lists = {}, {}
    for name, listed in document.image_lists.items():
        text = _read(folder / listed.file, f"image_lists.{name}", problems)
        contents.append(text.encode())
        hashes, bad = parse_entries(text, HASH_HEX if listed.kind == "near_deny" else DIGEST_HEX)
        problems += [f"image_lists.{name} ({listed.file}) {problem}" for problem in bad]
        if listed.kind == "near_deny":
            near_lists[name] = NearList(
                name, listed.label, hashes, distance=listed.distance, quality=listed.quality
            )
        else:
            exact_lists[name] = ExactList(name, listed.kind, listed.label, hashes)
    if problems:
        raise PolicyError(problems)
    indexes: dict[tuple[tuple[str, str], ...], KeywordIndex] = {}

    def compiled(effective: _Effective) -> Rules:
        lists = (
            *(keyword_lists[n] for n in effective.keyword_lists),
            *_folded(libraries, effective.thresholds),
        )
        names = tuple((listed.name, listed.action) for listed in lists)
        if names and names not in indexes:
            indexes[names] = KeywordIndex(lists)
        named = [exact_lists[n] for n in effective.image_lists if n in exact_lists]
        named += samples.exact
        return Rules(
            Thresholds(effective.thresholds),
            indexes.get(names),
            tuple(Detector.configured(kind, c) for kind, c in effective.detectors.items()),
            tuple(sorted(named, key=lambda listed: listed.kind != "deny")),
            (*(near_lists[n] for n in effective.image_lists if n in near_lists), *samples.near),
            compiled(_candidate(effective, effective.shadow)) if effective.shadow else None,
        )

    default = _inherit(document.default, _EMPTY)
    by_biz_type = {name: compiled(_inherit(rules, default)) for name, rules in document.biz_types.items()}
    version = hashlib.sha256(b"\0".join(contents)).hexdigest()[:16]
    lists = [folder / c.file for c in document.keyword_lists.values()]
    lists += [folder / c.file for c in document.image_lists.values()]
    lists += [library.path for library in libraries]
    lists += samples.files
    return Policy(version, compiled(default), by_biz_type, (*((path,) if path else ()), *lists))


def _folded(
    libraries: list[LocalLibrary], thresholds: Mapping[str, ThresholdConfig]
) -> tuple[KeywordList, ...]:
    """The local keyword libraries as a BizType's lists, each with the action its thresholds give a hit."""
    lists = []
    for library in libraries:
        action = action_for(library.label, thresholds)
        if action is not None:
            lists.append(KeywordList(library.id, library.label, action, library.words))
    return tuple(lists)


def _candidate(live: _Effective, shadow: ShadowSet) -> _Effective:
    """The shadow's rules: the live ones overridden by what it names. Image lists are matched before
    the backend is called, so a candidate has none."""
    return _Effective(
        {**live.thresholds, **shadow.thresholds},
        live.keyword_lists if shadow.keyword_lists is None else shadow.keyword_lists,
        (),
        live.detectors if shadow.detectors is None else shadow.detectors,
        None,
    )


def _unknown_names(table: dict[str, Any]) -> list[str]:
    """Lists a rule set names that the file does not define (read from the raw table, so they are
    reported beside any other problem)."""
    problems = []
    rule_sets = [("default", table.get("default"))]
    biz_types = table.get("biz_types")
    if isinstance(biz_types, dict):
        rule_sets += [(f"biz_types.{name}", rules) for name, rules in biz_types.items()]
    rule_sets += [
        (f"{where}.shadow", rules.get("shadow"))
        for where, rules in list(rule_sets)
        if isinstance(rules, dict)
    ]
    for where, rules in rule_sets:
        if not isinstance(rules, dict):
            continue
        for kind in ("keyword_lists", "image_lists"):
            defined, named = table.get(kind), rules.get(kind)
            defined = defined if isinstance(defined, dict) else {}
            if isinstance(named, list):
                problems += [
                    f"{where}.{kind}: no [{kind}.{n}]"
                    for n in named
                    if isinstance(n, str) and n not in defined
                ]
    return problems


def _read(path: Path, where: str, problems: list[str]) -> str:
    try:
        return read_text_file(path, LIST_FILE_LIMIT)
    except UnreadableFile as exc:
        problems.append(f"{where}: cannot read {path}: {exc}")
        return ""


def _keywords(text: str, where: str, problems: list[str]) -> tuple[str, ...]:
    entries: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if not normalise(entry):
            problems.append(f"{where} line {number}: an entry needs a letter or a digit")
            continue
        entries.append(entry)
    if len(entries) > MAX_KEYWORDS:
        problems.append(f"{where}: {len(entries)} entries; a list holds at most {MAX_KEYWORDS:,}")
    return tuple(entries)
