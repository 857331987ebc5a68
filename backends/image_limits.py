"""What a backend takes: the limits on the images it is sent, which each backend declares
(`Backend.image_limits`). The gateway checks a request's image against its route's backends after
routing, and fits it to them (`service.fitting`). The defaults are IMS's published limits (ims-facts
§0, §7), which the local backend's own checks of the images it downloads share too."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

__all__ = ["IMS_IMAGE_LIMITS", "MAX_ASPECT_RATIO", "MAX_IMAGE_BYTES", "MAX_SIDE", "MIN_SIDE", "ImageLimits"]

# Width and height must lie strictly between these, and the long side be less than 90x the short one.
MIN_SIDE: Final = 50
MAX_SIDE: Final = 10_000
MAX_ASPECT_RATIO: Final = 90
# A TC3-signed IMS request carries at most 10 MiB in all, so the base64 image and the JSON around it
# (up to 5000 escaped characters of user description among it) must fit together.
MAX_REQUEST_BYTES: Final = 10 * 1024 * 1024
JSON_ALLOWANCE: Final = 64 * 1024
MAX_IMAGE_BYTES: Final = (MAX_REQUEST_BYTES - JSON_ALLOWANCE) // 4 * 3


@dataclass(frozen=True)
class ImageLimits:
    """A backend's limits on the images it is sent (IMS's by default)."""

    # Width and height must be strictly between these.
    min_side: int = MIN_SIDE
    max_side: int = MAX_SIDE
    # The long side must be less than this many times the short one.
    max_aspect_ratio: int = MAX_ASPECT_RATIO
    # Raw bytes whose base64, with the JSON around it, fits the backend's request limit (10 MiB).
    max_bytes: int = MAX_IMAGE_BYTES
    # Formats sent as they are, as Pillow names them; others are transcoded. IMS lists TIFF and AVIF
    # too, but its decoders for them are where its FAQ reports InvalidImageContent: they go as JPEG.
    formats: frozenset[str] = field(
        default_factory=lambda: frozenset({"JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP"})
    )

    def within(self, other: ImageLimits) -> ImageLimits:
        """What both take: the narrower of each limit, the formats both accept as they are."""
        return ImageLimits(
            min_side=max(self.min_side, other.min_side),
            max_side=min(self.max_side, other.max_side),
            max_aspect_ratio=min(self.max_aspect_ratio, other.max_aspect_ratio),
            max_bytes=min(self.max_bytes, other.max_bytes),
            formats=self.formats & other.formats,
        )


IMS_IMAGE_LIMITS: Final = ImageLimits()
