"""Generated blocks inside hand-written pages: the text between `<!-- generated: NAME -->` and
`<!-- end: NAME -->` is the renderer's, everything around it the author's."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["DOCS", "Renderers", "render_blocks", "rewrite"]

DOCS = Path(__file__).resolve().parent.parent / "docs"
Renderers = Mapping[str, Callable[[], str]]


def render_blocks(text: str, renderers: Renderers, *, page: str = "the page") -> str:
    """`text` with every named block rendered afresh; ValueError when a block is missing."""
    for name, render in renderers.items():
        pattern = re.compile(rf"(<!-- generated: {name} -->\n).*?(<!-- end: {name} -->)", re.DOTALL)
        match = pattern.search(text)
        if match is None:
            raise ValueError(f"{page} has no block `{name}`")
        text = f"{text[: match.end(1)]}{render().rstrip()}\n{text[match.start(2) :]}"
    return text


def rewrite(path: Path, renderers: Renderers) -> bool:
    """Whether the page changed."""
    text = path.read_text(encoding="utf-8")
    rendered = render_blocks(text, renderers, page=str(path.relative_to(DOCS.parent)))
    if rendered != text:
        path.write_text(rendered, encoding="utf-8")
    return rendered != text
