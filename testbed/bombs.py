"""Hostile images that are small on the wire and expensive to decode or to sample, for the attack tests
and the hostile benchmark. Each maker returns encoded bytes; none holds a full-size image for long."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

__all__ = ["frame_flood_gif", "pixel_bomb_png", "pixel_bomb_webp", "tall_second_page_tiff"]


def frame_flood_gif(frames: int = 10_000, side: int = 60) -> bytes:
    """An animated GIF of `frames` tiny frames, each different so no encoder merges them."""
    palette = [0, 0, 0, 255, 255, 255] + [0] * (256 * 3 - 6)

    def frame(i: int) -> Image.Image:
        image = Image.new("P", (side, side), 0)
        image.putpalette(palette)
        x, y = i % (side - 2), (i // (side - 2)) % (side - 2)
        ImageDraw.Draw(image).point((x, y), fill=1)
        return image

    out = io.BytesIO()
    first, *rest = (frame(i) for i in range(frames))
    first.save(out, "GIF", save_all=True, append_images=rest, duration=20, loop=0, optimize=True)
    return out.getvalue()


def pixel_bomb_webp(width: int = 9_999, height: int = 8_948) -> bytes:
    """A lossless WEBP of one flat colour: a few KB that decode to width x height x 4 bytes."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "WEBP", lossless=True, quality=100, method=0)
    return out.getvalue()


def pixel_bomb_png(width: int = 12_000, height: int = 12_000) -> bytes:
    """A bilevel PNG: 18 MB of pixels compressed to a few hundred KB."""
    out = io.BytesIO()
    Image.new("1", (width, height), 1).save(out, "PNG", optimize=True)
    return out.getvalue()


def tall_second_page_tiff(second_side: int = 12_000) -> bytes:
    """A TIFF whose first page is an ordinary 200x200 and whose second is second_side square."""
    out = io.BytesIO()
    first = Image.new("RGB", (200, 200), (90, 120, 200))
    second = Image.new("1", (second_side, second_side), 1)
    first.save(out, "TIFF", save_all=True, append_images=[second], compression="tiff_deflate")
    return out.getvalue()
