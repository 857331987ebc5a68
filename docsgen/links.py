"""Declarations written for the old single README link to its anchors and to repository files; on the
site those become links to the guide pages and plain file names."""

from __future__ import annotations

import re

__all__ = ["relink"]

# The README's anchors that declarations still name, and the page each now lives on (from reference/).
_ANCHORS = {
    "#credentials-rotation-temporary-keys-and-cam-roles": "../guides/credentials.md",
    "#routing-failover-and-private-deployments": "../guides/routing.md",
    "#verdict-cache-never-pay-twice-for-one-image": "../guides/cache.md",
    "#the-local-backend": "../guides/local-backend.md",
    "#local-backend": "../guides/local-backend.md",
    "#observability": "../operations/observability.md",
    "#errors": "errors.md",
}
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def _target(match: re.Match[str]) -> str:
    text, target = match.group(1), match.group(2)
    if target.startswith("#"):
        if target not in _ANCHORS:
            raise ValueError(f"a declaration links to {target}, which no docs page answers: add it")
        return f"[{text}]({_ANCHORS[target]})"
    if target.startswith(("http://", "https://")):
        return match.group(0)
    # A file of the repository: outside the site, named rather than linked.
    return f"`{target}`" if text.strip("`") == target else f"{text} (`{target}`)"


def relink(text: str) -> str:
    """`text` with README anchors pointing at the docs pages and repository files named, not linked."""
    return _LINK.sub(_target, text)
