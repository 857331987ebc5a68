"""The configured secrets, looked for in everything the soak produced: none may appear anywhere."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

# The source name of everything the client received: results, per-item errors, failed calls' statuses.
ANSWERS = "answers the client received"


class SecretScan:
    """Counts what was scanned per source, and every place a secret turned up."""

    def __init__(self, secrets: dict[str, str]) -> None:
        # name -> value; a hit reports the name, never the value.
        self._secrets = {name: value.encode() for name, value in secrets.items()}
        self.scanned: Counter[str] = Counter()
        self.hits: list[str] = []

    def scan(self, source: str, data: bytes, *, count: int = 1, where: str = "") -> None:
        """`data` held `count` things of `source` (lines, spans, errors); `where` locates it."""
        self.scanned[source] += count
        for name, value in self._secrets.items():
            if value in data:
                self.hits.append(f"{name} in {source}{' ' + where if where else ''}: {_context(data, value)}")

    def scan_lines(self, source: str, path: Path) -> None:
        """Every line of a file, one at a time, so a hit names its line."""
        with path.open("rb") as lines:
            for number, line in enumerate(lines, 1):
                self.scan(source, line, where=f"line {number}")

    def summary(self) -> str:
        scanned = ", ".join(f"{count} {source}" for source, count in self.scanned.items())
        return f"{len(self.hits)} secret hit(s) in {scanned}"


def _context(data: bytes, secret: bytes) -> str:
    """The text around the secret, the secret masked: the report must not leak it either."""
    at = data.index(secret)
    around = data[max(0, at - 60) : at] + b"<SECRET>" + data[at + len(secret) : at + len(secret) + 60]
    return around.decode(errors="replace")
