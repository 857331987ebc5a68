"""IMS's published limits on an image's dimensions, shared by the gateway's validation of `content` and
the local backend's checks of the images it downloads (backends never import service/)."""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_ASPECT_RATIO", "MAX_SIDE", "MIN_SIDE"]

# Width and height must lie strictly between these, and the long side be less than 90x the short one.
MIN_SIDE: Final = 50
MAX_SIDE: Final = 10_000
MAX_ASPECT_RATIO: Final = 90
