"""Test images: small solid-colour pictures, optionally carrying `IMSEMU:` markers.

`marker` may hold several markers separated by spaces. Embedded markers are followed by a newline,
so the bytes after them (a chunk CRC, say) cannot run on into the marker.
"""

from __future__ import annotations

import io
from typing import Literal

from PIL import Image, PngImagePlugin

from .marker import format_marker

__all__ = ["format_marker", "make_gif", "make_jpeg", "make_png"]

Color = tuple[int, int, int]
DEFAULT_COLOR: Color = (96, 144, 200)


def _terminated(marker: str) -> str:
    return marker + "\n"


def _comment(marker: str | None, embed: str) -> dict[str, str]:
    """The `comment` save option, when the marker goes in the format's comment block."""
    return {"comment": _terminated(marker)} if marker and embed == "comment" else {}


def _with_appended(data: bytes, marker: str | None) -> bytes:
    # Every format emulated ignores bytes after its end marker, so they can carry the marker.
    return data + _terminated(marker).encode("ascii") if marker else data


def make_png(
    width: int = 256,
    height: int = 256,
    marker: str | None = None,
    *,
    color: Color = DEFAULT_COLOR,
    embed: Literal["text", "append"] = "text",
) -> bytes:
    """A PNG; the marker goes in a tEXt chunk (a valid PNG) or after the IEND chunk."""
    info = PngImagePlugin.PngInfo()
    if marker and embed == "text":
        info.add_text("Comment", _terminated(marker))
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG", pnginfo=info)
    return _with_appended(out.getvalue(), marker if embed == "append" else None)


def make_jpeg(
    width: int = 256,
    height: int = 256,
    marker: str | None = None,
    *,
    color: Color = DEFAULT_COLOR,
    embed: Literal["comment", "append"] = "comment",
) -> bytes:
    """A JPEG; the marker goes in a COM segment or after the EOI marker."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="JPEG", quality=85, **_comment(marker, embed))
    return _with_appended(out.getvalue(), marker if embed == "append" else None)


def make_gif(
    frames: int = 3,
    width: int = 256,
    height: int = 256,
    marker: str | None = None,
    *,
    embed: Literal["comment", "append"] = "comment",
) -> bytes:
    """An animated GIF of `frames` differently coloured frames (identical ones would be merged)."""
    images = [Image.new("RGB", (width, height), (40 * i % 256, 100, 160)) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(
        out,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=100,
        loop=0,
        **_comment(marker, embed),
    )
    return _with_appended(out.getvalue(), marker if embed == "append" else None)
