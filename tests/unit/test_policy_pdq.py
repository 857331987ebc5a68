"""The near-duplicate index (service.policy.pdq) against a brute-force scan of the same hashes."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from service.policy.model import ImageListConfig
from service.policy.pdq import NearList, PdqHash

rng = np.random.default_rng(26)
HASHES = rng.integers(0, 256, size=(5000, 32), dtype=np.uint8)
ENTRIES = [(h.tobytes().hex(), f"id-{i}" if i % 2 else "") for i, h in enumerate(HASHES)]


def flipped(index: int, bits: int) -> bytes:
    query = HASHES[index].copy()
    for bit in rng.choice(256, size=bits, replace=False):
        query[bit // 8] ^= 1 << (bit % 8)
    return bytes(query.tobytes())


@pytest.mark.parametrize("distance", [0, 15, 31, 40])
def test_the_index_finds_exactly_what_a_scan_finds(distance: int) -> None:
    near = NearList("banned", "Illegal", ENTRIES, distance=distance, quality=50)
    for trial in range(300):
        query = flipped(int(rng.integers(len(HASHES))), int(rng.integers(0, 48)))
        distances = np.unpackbits(HASHES ^ np.frombuffer(query, dtype=np.uint8), axis=1).sum(axis=1)
        hit = near.find(PdqHash(query, 100))
        assert (hit is not None) == (distances.min() <= distance), trial
        if hit is not None:
            nearest = int(distances.argmin())
            assert hit.entry == (ENTRIES[nearest][1] or ENTRIES[nearest][0])
            assert (hit.kind, hit.label, hit.list_name) == ("deny", "Illegal", "banned")


def test_a_hash_below_the_quality_floor_matches_nothing() -> None:
    near = NearList("banned", "Custom", ENTRIES, distance=31, quality=50)
    exact = HASHES[7].tobytes()
    assert near.find(PdqHash(exact, 50)) is not None
    assert near.find(PdqHash(exact, 49)) is None


def test_near_duplicates_can_only_deny() -> None:
    with pytest.raises(ValidationError):
        ImageListConfig.model_validate({"file": "x", "kind": "near_allow"})
