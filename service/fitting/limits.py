"""What a backend takes, and how far the gateway goes to make an image fit it."""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.image_limits import MAX_ASPECT_RATIO, MAX_SIDE, MIN_SIDE
from service.validation import MAX_IMAGE_BYTES

__all__ = ["IMS_LIMITS", "LIMITS_BY_TYPE", "LOCAL_LIMITS", "BackendLimits"]


@dataclass(frozen=True)
class BackendLimits:
    """A backend's declared limits on the images it is sent (IMS's by default: ims-facts §0, §7)."""

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


IMS_LIMITS = BackendLimits()
# The embedded backend reads every format Pillow reads, frames and pages included (its own checks
# refuse a page over the limits): only sizes are fitted for it.
LOCAL_LIMITS = BackendLimits(
    formats=frozenset({"JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "DIB", "ICO", "TIFF", "AVIF"})
)
# By backend type; a type not named here is IMS-compatible (a private deployment).
LIMITS_BY_TYPE = {"local": LOCAL_LIMITS}
