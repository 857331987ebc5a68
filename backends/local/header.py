"""IMS's limits on an image's header, for images the local backend downloads itself.

`content` is checked by the gateway before any backend sees it (service/validation.py); a URL's image
reaches the local backend unchecked, so the same limits are applied here, from the header alone,
before anything is decoded or admitted.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image

from backends.image_limits import MAX_ASPECT_RATIO, MAX_SIDE, MIN_SIDE
from backends.local.frames import LimitExceeded

__all__ = ["open_header"]

# The formats IMS accepts that Pillow reads.
ACCEPTED_FORMATS = frozenset({"BMP", "DIB", "ICO", "JPEG", "MPO", "PNG", "TIFF", "GIF", "WEBP", "AVIF"})


def open_header(content: bytes) -> Image.Image:
    """The image, opened lazily (nothing decoded); `LimitExceeded` if its header breaks IMS's limits.

    Pillow's own errors (unreadable or unknown data) pass through for the caller to classify.
    """
    with warnings.catch_warnings():
        # Pillow's bomb warning is about the same sizes refused below; its metadata complaints are noise.
        warnings.simplefilter("ignore")
        image = Image.open(io.BytesIO(content))
    try:
        _check(image)
    except LimitExceeded:
        image.close()
        raise
    return image


def _check(image: Image.Image) -> None:
    if image.format not in ACCEPTED_FORMATS:
        raise LimitExceeded(f"{image.format} images are not accepted")
    width, height = image.size
    if not all(MIN_SIDE < side < MAX_SIDE for side in (width, height)):
        raise LimitExceeded(
            f"the image is {width}x{height}; each side must be more than {MIN_SIDE} and less than "
            f"{MAX_SIDE} pixels"
        )
    if max(width, height) >= MAX_ASPECT_RATIO * min(width, height):
        raise LimitExceeded(
            f"the image is {width}x{height}; the aspect ratio must be below {MAX_ASPECT_RATIO}:1"
        )
