"""Frame sampling for multi-frame images (GIF, WEBP, APNG, TIFF), as IMS's `Interval` and `MaxFrames`
describe it, within the limits that keep one request's work bounded.

Every frame up to the last one sampled is measured from its header before anything of it is decoded
(Pillow's `seek` reads a frame's size and tiles; pixels are decoded by `load`), and counts towards the
request's pixel budget: GIF, WEBP and APNG decode the frames between samples too, to compose them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

from backends.image_limits import MAX_SIDE
from backends.local.cancel import CancelToken

__all__ = ["DEFAULT_LIMITS", "FrameLimits", "LimitExceeded", "decoded_bytes", "sample_frames"]

# Modes `Image.reduce` shrinks as they are; others are converted to RGB first.
_REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "RGBa", "CMYK", "I", "F"})
# Full-size copies of the decoded pixels a format's decoder holds at once. Pillow's WEBP plugin holds
# libwebp's RGBA frame, a bytes copy of it and the image (measured: 14.4 bytes a pixel at the peak).
_DECODE_COPIES = {"WEBP": 4}


@dataclass(frozen=True)
class FrameLimits:
    # Frames analysed at most per image; larger `max_frames` are clamped to it.
    max_frames: int = 5
    # Decoded pixels per request, every frame measured counted.
    max_pixels: int = (MAX_SIDE - 1) ** 2
    # Each side of every frame must be less than this (IMS's limit for the first frame).
    side_limit: int = MAX_SIDE
    # Frames are shrunk to this long side before analysis (see `Models`: the consumers need no more).
    analysis_side: int = 1920


DEFAULT_LIMITS = FrameLimits()


class LimitExceeded(Exception):
    """The image goes beyond one of the limits; the message says which."""


def decoded_bytes(image: Image.Image) -> int:
    """What decoding a frame of `image` costs in memory at the peak, estimated from its header: the
    decoder's buffers in the image's mode, plus an RGB copy."""
    width, height = image.size
    return width * height * (len(image.getbands()) * _DECODE_COPIES.get(image.format or "", 1) + 3)


def sample_frames(
    image: Image.Image, *, interval: int, max_frames: int, limits: FrameLimits, token: CancelToken
) -> Iterator[tuple[int, Image.Image]]:
    """(frame index, RGB frame no larger than `analysis_side`) for frames 0, interval, 2*interval, ...

    `interval` 0 means the first frame only; `max_frames` 0 means the default, 1, and more than
    `limits.max_frames` means that many. Raises `LimitExceeded` before decoding a frame over a limit,
    and `Cancelled` between frames once the call is over.
    """
    count = min(max_frames if max_frames > 0 else 1, limits.max_frames)
    if interval <= 0:
        count = 1
    first_pixels = image.size[0] * image.size[1]
    pixels = _measured(image, 0, first_pixels, 0, limits)
    position = 0
    for sample in range(count):
        while position < sample * interval:
            token.check()
            try:
                image.seek(position + 1)
            except EOFError:
                return
            position += 1
            pixels += _measured(image, position, first_pixels, pixels, limits)
        token.check()
        yield position, _analysis_frame(image, limits.analysis_side)


def _measured(image: Image.Image, index: int, first_pixels: int, used: int, limits: FrameLimits) -> int:
    """The pixels frame `index` will decode, once its declared size is within every limit."""
    width, height = image.size
    if width >= limits.side_limit or height >= limits.side_limit:
        raise LimitExceeded(
            f"frame {index} declares {width}x{height}; each side must be less than {limits.side_limit}"
        )
    if width * height > first_pixels:
        # The decode budget admitted the image by its first frame's size.
        raise LimitExceeded(f"frame {index} declares {width}x{height}, more pixels than the first frame")
    if used + width * height > limits.max_pixels:
        raise LimitExceeded(
            f"frame {index} would take the decoded pixels past the limit of {limits.max_pixels} per image"
        )
    return width * height


def _analysis_frame(image: Image.Image, side: int) -> Image.Image:
    width, height = image.size
    scale = side / max(width, height)
    if scale < 1 and image.format == "JPEG":
        # JPEG decodes at 1/2, 1/4 or 1/8 scale directly, never below the size asked for.
        image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
    image.load()
    frame = image
    factor = math.ceil(max(image.size) / side)
    if factor > 1:
        frame = (image if image.mode in _REDUCIBLE_MODES else image.convert("RGB")).reduce(factor)
    return frame.convert("RGB")
