"""The local backend's policy of earlier releases, folded into the gateway's (deprecated; removed in the
next release).

`MODERATION_LOCAL_POLICY` (a routing file's local `policy_file`) was a policy file of the format the
gateway's extends: without `MODERATION_POLICY_FILE` it becomes the gateway's policy. Its `checks` are
no longer needed: the local backend runs every check, and thresholds decide what counts.
`MODERATION_LOCAL_KEYWORDS` (`keyword_dir`) was a folder of keyword libraries, one TOML file each:

    id = "ads"
    name = "Advertising"
    label = "Ad"
    words = ["加微信", "free money"]

Each becomes a keyword list of every BizType, named by its `id`, whose action is what the BizType's
threshold for its label says of a score of 100 (a hit scored 100), as the local backend decided it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from backends.files import MIB, UnreadableFile, read_text_file
from backends.local.settings import LocalSettings
from service.policy.keywords import normalise
from service.policy.model import Action, ThresholdConfig
from service.policy.thresholds import OTHER
from service.routes import BackendConfig

__all__ = ["LocalLibrary", "LocalSources", "action_for", "local_sources", "read_libraries"]

# A library of a hundred thousand words is a few MB.
LIBRARY_FILE_LIMIT = 16 * MIB
# The local backend's thresholds for a label without its own, and a hit's score.
FALLBACK_REVIEW, FALLBACK_BLOCK = 50, 90
HIT_SCORE = 100


@dataclass(frozen=True)
class LocalSources:
    """The deprecated files the local backends name, and the settings that named them."""

    policy_file: Path | None
    keyword_dir: Path | None
    named_by: tuple[str, ...]


@dataclass(frozen=True)
class LocalLibrary:
    id: str
    label: str
    words: tuple[str, ...]
    path: Path
    content: bytes


def local_sources(
    backends: Sequence[BackendConfig], *, routed: bool
) -> tuple[LocalSources | None, list[str]]:
    """What the local backends' deprecated settings name; a problem when two name different files."""
    policy_files: dict[Path, str] = {}
    keyword_dirs: dict[Path, str] = {}
    for backend in backends:
        options = backend.options
        if not isinstance(options, LocalSettings):
            continue
        where = f"backends.{backend.name}." if routed else ""
        if options.policy_file is not None:
            policy_files.setdefault(options.policy_file, where + _setting("policy_file", routed))
        if options.keyword_dir is not None:
            keyword_dirs.setdefault(options.keyword_dir, where + _setting("keyword_dir", routed))
    problems = [
        f"{' and '.join(named.values())} name different files: the gateway has one policy"
        for named in (policy_files, keyword_dirs)
        if len(named) > 1
    ]
    if problems or not (policy_files or keyword_dirs):
        return None, problems
    return (
        LocalSources(
            next(iter(policy_files), None),
            next(iter(keyword_dirs), None),
            (*policy_files.values(), *keyword_dirs.values()),
        ),
        [],
    )


def _setting(field: str, routed: bool) -> str:
    """A routing file's key, or the variable the single backend reads."""
    alias = LocalSettings.model_fields[field].validation_alias
    return field if routed or not isinstance(alias, str) else alias


def read_libraries(folder: Path, problems: list[str]) -> list[LocalLibrary]:
    """Every library of `folder`; each bad one's problem appended to `problems`."""
    libraries = []
    for path in sorted(folder.glob("*.toml")):
        try:
            text = read_text_file(path, LIBRARY_FILE_LIMIT)
            document = tomllib.loads(text)
            words, _ = document["words"], document["name"]
            libraries.append(
                LocalLibrary(
                    str(document["id"]),
                    str(document["label"]),
                    # Words with no letter or digit match nothing: the gateway's lists refuse them.
                    tuple(word for word in map(str, words) if normalise(word)),
                    path,
                    text.encode(),
                )
            )
        except UnreadableFile as problem:
            problems.append(f"{path}: {problem}")
        except (tomllib.TOMLDecodeError, KeyError, TypeError, RecursionError) as exc:
            problems.append(f"{path}: needs id, name, label and a words list ({exc})")
    ids = [library.id for library in libraries]
    if len(ids) != len(set(ids)):
        problems.append(f"{folder}: library ids must be unique, got {ids}")
    return libraries


def action_for(label: str, thresholds: Mapping[str, ThresholdConfig]) -> Action | None:
    """What a BizType's thresholds made of a library hit on `label`; None: it passed."""
    config = thresholds.get(label) or thresholds.get(OTHER)
    review, block = (config.review, config.block) if config else (FALLBACK_REVIEW, FALLBACK_BLOCK)
    if block <= HIT_SCORE:
        return "block"
    return "review" if review <= HIT_SCORE else None
