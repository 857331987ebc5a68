"""Making outside text safe to show: configured secrets removed, length bounded, tokens held to a grammar.

Two sources of text are hostile: an upstream (which may echo the gateway's own request headers, the
signature and key id among them) and a caller (whose URL or data_id a message may quote). `Scrubber`
removes the configured secrets from any string; `excerpt` cuts quoted text to a short, printable,
ASCII-only snippet (gRPC percent-encodes everything else, tripling its size in the status metadata);
`Scrubber.token` keeps a code or label only if it matches its grammar and holds no secret, else the
fixed `UNRECOGNISED`, so metric label sets stay bounded.

Backends hold what an upstream sends to its grammar where it enters (each backend type owns its own
grammar of codes; `CODE` is the bound every code keeps); the service passes everything it shows
through one outward `Scrubber`. Both stand on this module, which imports neither.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

__all__ = [
    "CODE",
    "LABEL",
    "REDACTED",
    "REQUEST_ID",
    "UNRECOGNISED",
    "Scrubber",
    "bounded_token",
    "excerpt",
]

REDACTED: Final = "[REDACTED]"
# What a code, label or request id that fails its grammar becomes, wherever it would be shown or counted.
UNRECOGNISED: Final = "unrecognised"
MAX_CODE_CHARS: Final = 64
# Any upstream's error code, whatever its vendor: a dotted or dashed word, or a number (`588`). A backend
# type holds codes to its own, narrower grammar where they enter; this is the bound `BackendError` keeps
# for every type.
CODE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
# A label or sub-label (`Porn`, `SexyBehavior`, `Normal`, `Ad`): a word, no spaces or dots.
LABEL: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")
# An upstream's request id: a UUID, or a similar opaque id.
REQUEST_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")
# Quoted user or upstream text in a message: enough to recognise it, never enough to bloat a status.
EXCERPT_CHARS: Final = 64


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`text` as printable ASCII (others escaped), cut to `limit` characters with a marker saying so."""
    shown = text.encode("ascii", "backslashreplace").decode("ascii")
    if not shown.isprintable():
        shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in shown)
    if len(shown) <= limit:
        return shown
    return f"{shown[: max(limit - 16, 0)]}...({len(text)} chars)"


def bounded_token(value: str, grammar: re.Pattern[str], limit: int = MAX_CODE_CHARS) -> str:
    """`value` if it matches `grammar` within `limit` characters; else `UNRECOGNISED` ("" stays "")."""
    if not value or (len(value) <= limit and grammar.fullmatch(value)):
        return value
    return UNRECOGNISED


class Scrubber:
    """Removes the configured secrets (key ids, keys, tokens) from strings bound for the outside."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: tuple[str, ...] = ()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """More secrets to remove, such as keys rotated in after start; what it held it keeps."""
        # Longest first, so a secret containing another is removed whole; one tuple swapped in whole,
        # so a reader on another thread sees the old set or the new one.
        held = {*self._secrets, *(s for s in secrets if s)}
        self._secrets = tuple(sorted(held, key=len, reverse=True))

    def __repr__(self) -> str:
        return f"Scrubber({len(self._secrets)} secrets)"

    @property
    def secrets(self) -> tuple[str, ...]:
        return self._secrets

    def holds_secret(self, text: str) -> bool:
        # Without secrets (most strings an upstream sends are read so), no generator is started.
        return bool(self._secrets) and any(secret in text for secret in self._secrets)

    def __call__(self, text: str) -> str:
        if not self.holds_secret(text):
            return text
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def excerpt(self, text: str, limit: int = EXCERPT_CHARS) -> str:
        """Scrubbed first, so a cut can never leave part of a secret behind."""
        return excerpt(self(text), limit)

    def token(self, value: str, grammar: re.Pattern[str], limit: int = MAX_CODE_CHARS) -> str:
        """A grammatical token that holds a secret is still refused: an id can look like a code."""
        return UNRECOGNISED if self.holds_secret(value) else bounded_token(value, grammar, limit)
