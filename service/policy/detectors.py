"""Detectors of contact details in the image's text: phone numbers (`phonenumbers`) and URLs
(`urlextract`, with the TLD list its wheel ships: it never downloads one at run time)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import phonenumbers
from urlextract import URLExtract

from service.policy.model import Action, DetectorConfig, DetectorKind

__all__ = ["Detector", "DetectorHit", "find_phone", "find_url"]


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

    def find(self, text: str) -> DetectorHit | None:
        found = find_phone(text, self.regions) if self.kind == "phone" else find_url(text)
        return DetectorHit(self, found) if found else None


def find_phone(text: str, regions: tuple[str, ...]) -> str | None:
    """The first valid phone number in `text`, read as a number of each region in turn."""
    for region in regions:
        for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
            return str(match.raw_string)
    return None


@functools.cache
def _extractor() -> URLExtract:
    # The bundled TLD list; `update_when_older` is never called, so nothing is downloaded.
    return URLExtract(extract_email=False)


def find_url(text: str) -> str | None:
    for url in _extractor().gen_urls(text):
        return str(url)
    return None
