"""Keyword libraries matched over OCR text with Aho-Corasick (pyahocorasick): one pass per text, whatever
the number of libraries and words.

A library is one TOML file in the keyword folder:

    id = "ads"
    name = "Advertising"
    label = "Ad"                 # the label a hit implies
    words = ["加微信", "free money"]

Matching is case-insensitive and ignores spaces (OCR drops or invents them), and reports offsets in the
original text, as IMS's hit positions do.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import ahocorasick

from common.files import MIB, UnreadableFile, read_text_file

# A library of a hundred thousand words is a few MB.
KEYWORD_LIBRARY_LIMIT = 16 * MIB


class KeywordLibraryError(ValueError):
    pass


@dataclass(frozen=True)
class KeywordLibrary:
    id: str
    name: str
    label: str
    words: tuple[str, ...]


@dataclass(frozen=True)
class KeywordHit:
    library: KeywordLibrary
    keyword: str
    start: int
    # Exclusive end offset in the original text.
    end: int


def load_libraries(folder: Path) -> list[KeywordLibrary]:
    libraries = []
    for path in sorted(folder.glob("*.toml")):
        try:
            text = read_text_file(path, KEYWORD_LIBRARY_LIMIT)
        except UnreadableFile as problem:
            raise KeywordLibraryError(f"{path}: {problem}") from None
        try:
            document = tomllib.loads(text)
            words = document["words"]
            library = KeywordLibrary(
                str(document["id"]),
                str(document["name"]),
                str(document["label"]),
                tuple(str(w) for w in words),
            )
        except (tomllib.TOMLDecodeError, KeyError, TypeError, RecursionError) as exc:
            raise KeywordLibraryError(f"{path}: needs id, name, label and a words list ({exc})") from None
        libraries.append(library)
    ids = [library.id for library in libraries]
    if len(ids) != len(set(ids)):
        raise KeywordLibraryError(f"{folder}: library ids must be unique, got {ids}")
    return libraries


def _normalise(text: str) -> tuple[str, list[int]]:
    """Lower-cased text without whitespace, and each kept character's offset in the original."""
    kept = [(i, ch.lower()) for i, ch in enumerate(text) if not ch.isspace()]
    return "".join(ch for _, ch in kept), [i for i, _ in kept]


class KeywordMatcher:
    def __init__(self, libraries: list[KeywordLibrary]) -> None:
        self._automaton: ahocorasick.Automaton | None = None
        entries: dict[str, list[tuple[KeywordLibrary, str]]] = {}
        for library in libraries:
            for word in library.words:
                key, _ = _normalise(word)
                if key:
                    entries.setdefault(key, []).append((library, word))
        if entries:
            automaton = ahocorasick.Automaton()
            for key, owners in entries.items():
                automaton.add_word(key, (len(key), owners))
            automaton.make_automaton()
            self._automaton = automaton

    def find(self, text: str) -> list[KeywordHit]:
        if self._automaton is None:
            return []
        normalised, offsets = _normalise(text)
        hits: list[KeywordHit] = []
        for last, (length, owners) in self._automaton.iter(normalised):
            start, end = offsets[last - length + 1], offsets[last] + 1
            hits.extend(KeywordHit(library, word, start, end) for library, word in owners)
        return hits
