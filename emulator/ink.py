"""Printed text the emulator "reads" from the pixels: a patch of magenta ink is an advertisement.

The `IMSEMU:` markers live in an image's bytes and do not survive re-encoding; ink does survive
scaling, re-encoding and tiling, so the gateway's fitting can be tested end to end: the answer's OCR
location is where the ink is in the image the emulator was sent. Off unless `EmulatorConfig.read_ink`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageChops

from .marker import Hit

# Pure magenta, with room for JPEG's colour subsampling and Lanczos's blur.
_RED_MIN, _GREEN_MAX, _BLUE_MIN = 180, 90, 180
# JPEGs are decoded at up to 1/8 of their size: ink patches are larger than 8 px.
_DRAFT_SIDE = 512


@dataclass(frozen=True)
class InkHit(Hit):
    """An OCR hit with where the ink was, in the pixels of the image sent."""

    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # x, y, width, height


def find_ink(image: bytes) -> list[Hit]:
    """One Block/Ad OCR hit around all the magenta in the image, or none."""
    with Image.open(io.BytesIO(image)) as opened:
        width, height = opened.size
        opened.draft("RGB", (max(1, width // 8), max(1, height // 8)))
        rgb = opened.convert("RGB")
    red, green, blue = rgb.split()
    mask = ImageChops.multiply(
        ImageChops.multiply(
            red.point(lambda v: 255 if v >= _RED_MIN else 0),
            green.point(lambda v: 255 if v <= _GREEN_MAX else 0),
        ),
        blue.point(lambda v: 255 if v >= _BLUE_MIN else 0),
    )
    found = mask.getbbox()
    if found is None:
        return []
    scale_x, scale_y = width / rgb.width, height / rgb.height
    left, top, right, bottom = found
    box = (left * scale_x, top * scale_y, (right - left) * scale_x, (bottom - top) * scale_y)
    return [InkHit("Block", "Ad", "", 90, "ocr", box=box)]
