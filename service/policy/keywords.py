"""Keyword lists matched against the text the backend read in the image, in one Aho-Corasick pass.

Text and entries are normalised alike: NFKC (full-width forms become ASCII, ligatures letters),
case-folded, and stripped of everything but letters and digits, so "F.R.E.E  m o n e y" (or its
full-width spelling) matches the entry "free money" in any language. A list's entry that is nothing
but spaces and punctuation is refused.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import ahocorasick
from moderation.v1.moderation_service_pb2 import ModerateImageResponse

from service.policy.model import Action

__all__ = ["KeywordHit", "KeywordIndex", "KeywordList", "normalise", "read_text"]

# Everything that is not a letter or a digit (Python's \w less the underscore).
_NOT_ALNUM = re.compile(r"[\W_]+")
_RANK = {"review": 1, "block": 2}


def normalise(text: str) -> str:
    kept = _NOT_ALNUM.sub("", text)
    # Letters, digits and CJK ideographs are mostly NFKC already: the check costs a tenth of the
    # normalisation (symbols NFKC would turn into letters, such as ㎏, are dropped with the punctuation).
    if unicodedata.is_normalized("NFKC", kept):
        return kept.casefold()
    return _NOT_ALNUM.sub("", unicodedata.normalize("NFKC", kept).casefold())


def _searchable(normalised: str) -> str:
    """The text's UTF-8 bytes, one character each. pyahocorasick scans a node's children one by one:
    over characters, the root of 100,000 CJK and Latin keywords has thousands, over bytes at most
    256 (six times faster measured). UTF-8 is self-synchronising, so a match still starts and ends on
    character boundaries."""
    return normalised.encode().decode("latin-1")


@dataclass(frozen=True)
class KeywordList:
    name: str
    label: str
    action: Action
    entries: tuple[str, ...]


@dataclass(frozen=True)
class KeywordHit:
    list: KeywordList
    # The entry as the list spells it.
    entry: str


class KeywordIndex:
    """Every entry of some lists in one automaton; a hit reports the most severe list's entry."""

    def __init__(self, lists: Sequence[KeywordList]) -> None:
        self.lists = tuple(lists)
        self._automaton: ahocorasick.Automaton | None = None
        owners: dict[str, list[KeywordHit]] = {}
        for keyword_list in lists:
            for entry in keyword_list.entries:
                owners.setdefault(_searchable(normalise(entry)), []).append(KeywordHit(keyword_list, entry))
        if owners:
            automaton = ahocorasick.Automaton()
            for key, hits in owners.items():
                automaton.add_word(key, _most_severe(hits))
            automaton.make_automaton()
            self._automaton = automaton

    def find(self, text: str) -> KeywordHit | None:
        """The most severe entry found in `text` (the first found on a tie); None when none is."""
        if self._automaton is None or not text:
            return None
        found = [hit for _, hit in self._automaton.iter(_searchable(normalise(text)))]
        return _most_severe(found) if found else None


def _most_severe(hits: Iterable[KeywordHit]) -> KeywordHit:
    return max(hits, key=lambda hit: _RANK[hit.list.action])


def read_text(response: ModerateImageResponse) -> str:
    """The text the backend read in the image: each OCR result's, or its boxes' when it has none."""
    parts = []
    for result in response.ocr_results:
        parts.append(result.text or "\n".join(detail.text for detail in result.details))
    return "\n".join(parts)
