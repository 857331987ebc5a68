"""Near-duplicate deny lists: PDQ perceptual hashes (`pdqhash`), looked up by multi-index hashing.

A 256-bit hash is cut into 16 chunks of 16 bits. Two hashes within `distance` bits agree within
`distance // 16` bits on at least one chunk (pigeonhole), so a look-up visits, per chunk, only the
buckets of the query's chunk and its neighbours within that many bits, then measures the full distance
of those candidates: no linear scan. Each chunk's buckets are one array of ids sorted by chunk value and
an offsets array (CSR), 64 bytes per hash plus 4 MiB.

Hashes are written in hex as ThreatExchange writes them (bit k of the hash is bit k of the number).
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pdqhash
from numpy.typing import NDArray
from PIL import Image

from service.policy.imagelists import ListHit

__all__ = ["HASH_HEX", "MAX_DISTANCE", "NearList", "PdqHash", "pdq_hash"]

HASH_HEX = 64
CHUNKS, CHUNK_BITS = 16, 16
# At most two differing bits per chunk are searched (137 buckets per chunk).
MAX_DISTANCE = 3 * CHUNKS - 1
# PDQ's own reference downsamples to this before hashing: the hash does not change, the time does.
HASH_SIDE = 512


@dataclass(frozen=True)
class PdqHash:
    digest: bytes
    # PDQ's quality, 0-100: low for flat or featureless images, whose hashes match too easily.
    quality: int


def pdq_hash(content: bytes) -> PdqHash | None:
    """The image's PDQ hash; None when it cannot be decoded. CPU-bound: run it off the event loop."""
    try:
        with Image.open(io.BytesIO(content)) as image:
            image.draft("RGB", (HASH_SIDE, HASH_SIDE))
            image.thumbnail((HASH_SIDE, HASH_SIDE))
            pixels = np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    bits, quality = pdqhash.compute(pixels)
    return PdqHash(np.packbits(bits[::-1].astype(np.uint8)).tobytes(), int(quality))


def _flip_masks(bits: int) -> NDArray[np.uint16]:
    """Every 16-bit mask with at most `bits` bits set."""
    masks = [0]
    for count in range(1, bits + 1):
        for chosen in itertools.combinations(range(CHUNK_BITS), count):
            masks.append(sum(1 << b for b in chosen))
    return np.array(masks, dtype=np.uint16)


class NearList:
    """A near-duplicate deny list: it only ever denies."""

    def __init__(
        self, name: str, label: str, entries: Sequence[tuple[str, str]], *, distance: int, quality: int
    ) -> None:
        self.name, self.label, self.distance, self.quality = name, label, distance, quality
        raw = b"".join(bytes.fromhex(digest) for digest, _ in entries)
        self._hashes = np.frombuffer(raw, dtype=np.uint8).reshape(-1, HASH_HEX // 2)
        self._entries = [entry or digest for digest, entry in entries]
        chunks = self._hashes.view(">u2").astype(np.int64)  # (n, 16)
        count = len(entries)
        self._ids = np.empty((CHUNKS, count), dtype=np.uint32)
        self._offsets = np.empty((CHUNKS, 2**CHUNK_BITS + 1), dtype=np.int64)
        for chunk in range(CHUNKS):
            values = chunks[:, chunk]
            order = np.argsort(values, kind="stable")
            self._ids[chunk] = order
            self._offsets[chunk, 0] = 0
            np.cumsum(np.bincount(values, minlength=2**CHUNK_BITS), out=self._offsets[chunk, 1:])
        self._masks = _flip_masks(distance // CHUNKS).astype(np.int64)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return int(self._hashes.nbytes + self._ids.nbytes + self._offsets.nbytes)

    def find(self, query: PdqHash) -> ListHit | None:
        """The nearest entry within `distance` bits; None when none is, or the query's quality is
        below the floor (a featureless image's hash is near too many others)."""
        if query.quality < self.quality or not self._entries:
            return None
        probe = np.frombuffer(query.digest, dtype=np.uint8)
        buckets = probe.view(">u2").astype(np.int64)[:, None] ^ self._masks[None, :]  # (16, masks)
        rows = np.arange(CHUNKS)[:, None]
        starts, ends = self._offsets[rows, buckets].ravel(), self._offsets[rows, buckets + 1].ravel()
        lengths = ends - starts
        total = int(lengths.sum())
        if total == 0:
            return None
        # Every candidate's position in the flattened (chunk, id) array, without a Python loop.
        bases = np.repeat(np.repeat(np.arange(CHUNKS) * len(self._entries), len(self._masks)), lengths)
        firsts = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
        candidates = np.unique(self._ids.ravel()[bases + firsts + np.arange(total)])
        distances = np.bitwise_count(self._hashes[candidates] ^ probe).sum(axis=1)
        nearest = int(np.argmin(distances))
        if distances[nearest] > self.distance:
            return None
        return ListHit(self.name, "deny", self.label, self._entries[int(candidates[nearest])])
