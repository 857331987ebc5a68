"""Image lists by exact SHA-256: a sorted array of digests (32 bytes an entry, searched in O(log n)),
and the ids the file gave its entries."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["ExactList", "ListHit", "parse_entries"]

DIGEST_HEX = 64


@dataclass(frozen=True)
class ListHit:
    list_name: str
    kind: Literal["allow", "deny"]
    label: str
    # The entry's id as the file gave it, or the hash matched.
    entry: str


def parse_entries(text: str, hex_length: int) -> tuple[list[tuple[str, str]], list[str]]:
    """(hash in lower-case hex, id or "") per entry line; and each bad line's problem."""
    entries, problems = [], []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split(None, 1)
        if not fields:
            continue
        digest = fields[0].lower()
        if len(digest) != hex_length or any(c not in "0123456789abcdef" for c in digest):
            problems.append(f"line {number}: not a {hex_length}-digit hex hash")
            continue
        entries.append((digest, fields[1].strip() if len(fields) > 1 else ""))
    return entries, problems


class ExactList:
    def __init__(
        self, name: str, kind: Literal["allow", "deny"], label: str, entries: Iterable[tuple[str, str]]
    ) -> None:
        self.name, self.kind, self.label = name, kind, label
        pairs = list(entries)
        digests = b"".join(bytes.fromhex(digest) for digest, _ in pairs)
        self._digests = np.unique(np.frombuffer(digests, dtype="S32"))
        self._ids: Mapping[bytes, str] = {bytes.fromhex(d): i for d, i in pairs if i}

    def __len__(self) -> int:
        return len(self._digests)

    @property
    def nbytes(self) -> int:
        return int(self._digests.nbytes)

    def find(self, digest: bytes) -> ListHit | None:
        """The entry for `digest` (a SHA-256), if the list holds it."""
        at = int(np.searchsorted(self._digests, digest))
        # Compared as raw bytes: numpy's bytes scalars drop trailing NULs.
        if self._digests[at : at + 1].tobytes() != digest:
            return None
        return ListHit(self.name, self.kind, self.label, self._ids.get(digest) or digest.hex())
