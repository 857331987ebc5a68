"""Detectors of contact details in the image's text: phone numbers (`phonenumbers`) and URLs
(`urlextract`, with the TLD list its wheel ships: it never downloads one at run time)."""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

import phonenumbers
from urlextract import URLExtract

from service.policy.model import Action, DetectorConfig, DetectorKind

__all__ = ["Detector", "DetectorHit", "find_phone", "find_url"]

# No numbering plan has valid numbers shorter than this (most are 10 or 11 digits).
MIN_PHONE_DIGITS = 7
_DIGIT = re.compile(r"\d")
_NOT_ASCII = re.compile(r"[^\x00-\x7f]+")
# What every URL the extractor finds has, in any width: a dot before a letter (the TLD's), a scheme's
# "://", or an IPv4 address. A price or a date ("3.5", "2026.12.06") has none.
_URL_HINT = re.compile(
    r"[.．｡][A-Za-zＡ-Ｚａ-ｚ]|[:：][/／]{2}|\d{1,3}(?:[.．｡]\d{1,3}){3}"  # noqa: RUF001
)


@dataclass(frozen=True)
class DetectorHit:
    detector: Detector
    # The text found, as the image shows it.
    matched: str


@dataclass(frozen=True)
class Detector:
    kind: DetectorKind
    action: Action
    label: str
    regions: tuple[str, ...]

    @classmethod
    def configured(cls, kind: DetectorKind, config: DetectorConfig) -> Detector:
        return cls(kind, config.action, config.label, config.regions)

    def may_find(self, text: str) -> bool:
        """False when `text` cannot hold what the detector finds (7 digits for a number; for a URL a dot
        before a letter, "://" or an IPv4 address): a few µs, where the search itself takes milliseconds
        of Python on a few hundred characters (the gateway runs it in a worker thread)."""
        return _may_hold_phone(text) if self.kind == "phone" else _may_hold_url(text)

    def find(self, text: str) -> DetectorHit | None:
        found = find_phone(text, self.regions) if self.kind == "phone" else find_url(text)
        return DetectorHit(self, found) if found else None


def _may_hold_phone(text: str) -> bool:
    return len(_DIGIT.findall(text)) >= MIN_PHONE_DIGITS


def _may_hold_url(text: str) -> bool:
    return _URL_HINT.search(text) is not None


def find_phone(text: str, regions: tuple[str, ...]) -> str | None:
    """The first valid phone number in `text`, read as a number of each region in turn."""
    if not _may_hold_phone(text):
        return None
    for region in regions:
        for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
            return str(match.raw_string)
    return None


@functools.cache
def _extractor() -> URLExtract:
    # The bundled TLD list; `update_when_older` is never called, so nothing is downloaded.
    return URLExtract(extract_email=False)


def find_url(text: str) -> str | None:
    if not _may_hold_url(text):
        return None
    # Chinese text runs into URLs without spaces ("请访问www.spam.cn领奖"): the extractor needs a
    # boundary, so other scripts become spaces (internationalised domain names are not detected).
    ascii_only = _NOT_ASCII.sub(" ", unicodedata.normalize("NFKC", text))
    for url in _extractor().gen_urls(ascii_only):
        return str(url)
    return None
