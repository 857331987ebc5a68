"""Allow and deny libraries of sample images, matched by perceptual hashes.

Two 64-bit hashes per image, both robust to resizing and recompression: pHash (the signs of the
lowest 8x8 DCT frequencies of a 32x32 grey thumbnail, against their median) and dHash (the signs of
horizontal gradients of a 9x8 thumbnail). A sample matches when both are within a few bits, which keeps
false matches rare while tolerating light crops. Sample files may sit in one level of sub-folders whose
name is the label the match reports (deny/Porn/x.jpg reports Porn).
"""

from __future__ import annotations

import enum
import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from common.files import MIB, UnreadableFile, read_regular_file

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})
MAX_PHASH_DISTANCE = 12
MAX_DHASH_DISTANCE = 16
# Past IMS's own 10 MB image limit: a sample larger than this is not an image worth hashing.
SAMPLE_FILE_LIMIT = 64 * MIB


class SampleLibraryError(ValueError):
    pass


class Kind(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True)
class Fingerprint:
    phash: int
    dhash: int

    def distances(self, other: Fingerprint) -> tuple[int, int]:
        return (self.phash ^ other.phash).bit_count(), (self.dhash ^ other.dhash).bit_count()


@dataclass(frozen=True)
class Sample:
    kind: Kind
    image_id: str
    label: str
    fingerprint: Fingerprint


@dataclass(frozen=True)
class Match:
    sample: Sample
    # 0-100: how alike, from the pHash distance.
    score: int


def _bits(flags: np.ndarray) -> int:
    return int("".join("1" if f else "0" for f in flags.flatten()), 2)


def fingerprint(image: Image.Image) -> Fingerprint:
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8]
    phash = _bits(low > np.median(low))
    thumb = cv2.resize(grey, (9, 8), interpolation=cv2.INTER_AREA)
    dhash = _bits(thumb[:, 1:] > thumb[:, :-1])
    return Fingerprint(phash, dhash)


def load_samples(folder: Path | None, kind: Kind) -> list[Sample]:
    if folder is None:
        return []
    samples = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        label = path.parent.name if path.parent != folder else ("Allow" if kind is Kind.ALLOW else "Deny")
        where = f"the {kind.value} library's sample {path}"
        try:
            content = read_regular_file(path, SAMPLE_FILE_LIMIT)
        except UnreadableFile as problem:
            raise SampleLibraryError(f"{where}: {problem}") from None
        try:
            with Image.open(io.BytesIO(content)) as image:
                samples.append(Sample(kind, path.stem, label, fingerprint(image)))
        except (OSError, Image.DecompressionBombError):
            raise SampleLibraryError(f"{where}: not an image the library can read") from None
    return samples


class ImageLibrary:
    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples

    def best_match(self, image: Image.Image) -> Match | None:
        """The closest sample within the distance limits; allow samples win ties."""
        if not self.samples:
            return None
        probe = fingerprint(image)
        best: tuple[int, int, Sample] | None = None
        for sample in self.samples:
            phash_distance, dhash_distance = probe.distances(sample.fingerprint)
            if phash_distance > MAX_PHASH_DISTANCE or dhash_distance > MAX_DHASH_DISTANCE:
                continue
            rank = (phash_distance + dhash_distance, 0 if sample.kind is Kind.ALLOW else 1, sample)
            if best is None or rank[:2] < best[:2]:
                best = rank
        if best is None:
            return None
        phash_distance = best[2].fingerprint.distances(probe)[0]
        return Match(best[2], round(100 * (1 - phash_distance / 64)))
