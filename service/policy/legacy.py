"""The local backend's policy of earlier releases, folded into the gateway's (deprecated; removed in the
next release), so that policy lives in one place and the local backend only reports what it finds.

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
`MODERATION_LOCAL_ALLOW_DIR` and `MODERATION_LOCAL_DENY_DIR` (`allow_dir`, `deny_dir`) were folders of
sample images, matched by perceptual hashes: the allow samples become an exact allow list (`local_allow`,
by SHA-256: a near-duplicate never allows), the deny samples near-duplicate deny lists by PDQ, one per
label (`local_deny.<label>`, a sub-folder's name; `Deny` for the folder's own files). Every BizType
checks them before any backend call.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from backends.local.settings import LocalSettings
from common.files import MIB, UnreadableFile, read_regular_file, read_text_file
from service.policy.imagelists import ExactList
from service.policy.keywords import normalise
from service.policy.model import Action, ImageListConfig, ThresholdConfig
from service.policy.pdq import NearList, pdq_hash
from service.policy.thresholds import OTHER
from service.routing_file import BackendConfig

__all__ = [
    "LocalLibrary",
    "LocalSources",
    "SampleLists",
    "action_for",
    "local_sources",
    "read_libraries",
    "read_samples",
]

# A library of a hundred thousand words is a few MB.
LIBRARY_FILE_LIMIT = 16 * MIB
# The local backend's thresholds for a label without its own, and a hit's score.
FALLBACK_REVIEW, FALLBACK_BLOCK = 50, 90
HIT_SCORE = 100
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})
# Past IMS's own 10 MB image limit: a sample larger than this is not an image worth hashing.
SAMPLE_FILE_LIMIT = 64 * MIB
# The fields of a local backend's settings that name what folds in, in the order they are reported.
FOLDED = ("policy_file", "keyword_dir", "allow_dir", "deny_dir")


@dataclass(frozen=True)
class LocalSources:
    """The deprecated files and folders the local backends name, and the settings that named them."""

    policy_file: Path | None
    keyword_dir: Path | None
    allow_dir: Path | None
    deny_dir: Path | None
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
    """What the local backends' deprecated settings name; a problem when two name different paths."""
    named: dict[str, dict[Path, str]] = {field: {} for field in FOLDED}
    for backend in backends:
        options = backend.options
        if not isinstance(options, LocalSettings):
            continue
        where = f"backends.{backend.name}." if routed else ""
        for field, paths in named.items():
            path = getattr(options, field)
            if path is not None:
                paths.setdefault(path, where + _setting(field, routed))
    problems = [
        f"{' and '.join(settings.values())} name different files: the gateway has one policy"
        for settings in named.values()
        if len(settings) > 1
    ]
    if problems or not any(named.values()):
        return None, problems
    first = {field: next(iter(paths), None) for field, paths in named.items()}
    by = tuple(setting for paths in named.values() for setting in paths.values())
    return LocalSources(**first, named_by=by), []


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


@dataclass(frozen=True)
class SampleLists:
    """The sample folders as image lists, what they were read from, and what their version hashes."""

    exact: tuple[ExactList, ...]
    near: tuple[NearList, ...]
    files: tuple[Path, ...]
    content: bytes


def read_samples(allow: Path | None, deny: Path | None, problems: list[str]) -> SampleLists:
    """The allow folder as an exact list, the deny folder as near-duplicate lists by label."""
    allowed: list[tuple[str, str]] = []
    denied: dict[str, list[tuple[str, str]]] = {}
    files: list[Path] = []
    for kind, folder in (("allow", allow), ("deny", deny)):
        for path in _sample_files(folder):
            where = f"the {kind} library's sample {path}"
            try:
                content = read_regular_file(path, SAMPLE_FILE_LIMIT)
            except UnreadableFile as problem:
                problems.append(f"{where}: {problem}")
                continue
            files.append(path)
            if kind == "allow":
                allowed.append((hashlib.sha256(content).hexdigest(), path.stem))
                continue
            hashed = pdq_hash(content)
            if hashed is None:
                problems.append(f"{where}: not an image the library can read")
                continue
            label = path.parent.name if path.parent != folder else "Deny"
            denied.setdefault(label, []).append((hashed.digest.hex(), path.stem))
    # The gateway's own defaults for a near-duplicate list (distance 31, quality 50).
    defaults = ImageListConfig.model_fields
    distance, quality = defaults["distance"].default, defaults["quality"].default
    return SampleLists(
        (ExactList("local_allow", "allow", "Allow", allowed),) if allowed else (),
        tuple(
            NearList(f"local_deny.{label}", label, entries, distance=distance, quality=quality)
            for label, entries in denied.items()
        ),
        tuple(files),
        repr((allowed, sorted(denied.items()))).encode(),
    )


def _sample_files(folder: Path | None) -> list[Path]:
    if folder is None:
        return []
    return [
        path
        for path in sorted(folder.rglob("*"))
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    ]
