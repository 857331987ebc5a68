"""What IMS checks of the image itself: size, format, resolution and aspect ratio (ims-facts §0, §7)."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from .errors import ImsError

MIN_FILE_BYTES = 16
# Width and height must lie strictly between these (sync ImageModeration).
MIN_SIDE, MAX_SIDE = 50, 10000
MAX_ASPECT_RATIO = 90
# The documented formats Pillow can read (SVG, RAW and JNG it cannot, so they are not emulated).
# MPO is how Pillow names a JPEG carrying several pictures, as phone cameras write them.
SUPPORTED_FORMATS = frozenset({"BMP", "ICO", "JPEG", "MPO", "PNG", "TIFF", "GIF", "WEBP", "AVIF", "HEIF"})


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


def inspect(data: bytes) -> ImageInfo:
    """Read the image header and apply the IMS limits, raising the IMS code of the first one broken."""
    if len(data) < MIN_FILE_BYTES:
        raise ImsError(
            "InvalidParameter.ImageDataTooSmall",
            f"The image is {len(data)} bytes; it must be at least {MIN_FILE_BYTES} bytes.",
        )
    try:
        with Image.open(io.BytesIO(data)) as image:
            info = ImageInfo(image.format or "", image.width, image.height)
    except Image.DecompressionBombError:
        # Only images far beyond MAX_SIDE trip Pillow's bomb guard: report them as out of range.
        raise ImsError(
            "InvalidParameter.ImageSizeTooSmall", f"The image resolution exceeds {MAX_SIDE} px."
        ) from None
    except Exception:
        # Pillow's format plugins signal corrupt input with many exception types (OSError,
        # SyntaxError, ValueError, EOFError, struct.error...); all mean "not an image".
        raise ImsError(
            "InvalidParameter.InvalidImageContent", "The file is not an image of a supported format."
        ) from None
    if info.format not in SUPPORTED_FORMATS:
        raise ImsError(
            "InvalidParameter.InvalidImageContent", f"The image format {info.format} is not supported."
        )
    if not (MIN_SIDE < info.width < MAX_SIDE and MIN_SIDE < info.height < MAX_SIDE):
        raise ImsError(
            "InvalidParameter.ImageSizeTooSmall",
            f"The image is {info.width}x{info.height} px; width and height must be greater than "
            f"{MIN_SIDE} and less than {MAX_SIDE} px.",
        )
    if max(info.width, info.height) >= MAX_ASPECT_RATIO * min(info.width, info.height):
        raise ImsError(
            "InvalidParameter.ImageAspectRatioTooLarge",
            f"The image is {info.width}x{info.height} px; "
            f"the aspect ratio must be less than {MAX_ASPECT_RATIO}:1.",
        )
    return info
