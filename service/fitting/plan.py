"""What to do with an image of a given size and format so the backend takes it: pure arithmetic.

* It fits: sent as it is (or transcoded, or re-encoded smaller, when its format or bytes do not fit).
* Too large but of an ordinary shape: downscaled, the long side to `DOWNSCALE_SIDE`: moderation does
  not need more. A JPEG is instead decoded at 1/2, 1/4 or 1/8 of its size straight from the DCT (draft
  mode), the largest reduction that keeps its long side at `MIN_DRAFT_SIDE` or more: no resampling at
  all, and a fraction of the memory.
* Of an extreme aspect ratio (>= the backend's maximum), or so long that fitting it whole would shrink
  it below half its size (a long screenshot's text would become unreadable): cut into overlapping tiles
  across the long side, each one a backend call, at full resolution (unless the short side is itself
  too long).
* Too small: never upscaled; refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from backends.image_limits import ImageLimits

__all__ = ["MAX_LONG_SIDE", "MAX_PIXELS", "FitRefused", "Plan", "Tile", "plan"]

# The longest side the gateway fits (the goal: 40,000 px screenshots).
MAX_LONG_SIDE = 40_000
# The most pixels the gateway decodes for one image (40,000 x 4,000): a 12,000 x 9,000 photo fits.
MAX_PIXELS = 160_000_000
# The long side of a downscaled image; of a JPEG decoded reduced, at least MIN_DRAFT_SIDE.
DOWNSCALE_SIDE = 4096
MIN_DRAFT_SIDE = 2048
DRAFT_REDUCTIONS = (8, 4, 2)
# Below this factor, fitting a long image whole would lose its detail: it is tiled instead.
MIN_WHOLE_SCALE = 0.5
# The share of a tile's length it overlaps the next one by, so that no text line or object is only
# ever seen cut in two.
OVERLAP = 0.1


class FitRefused(Exception):
    """The image cannot be fitted; `reason` is the stable ErrorInfo reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Tile:
    """A strip of the scaled image: `start` to `end` along its long side, in scaled pixels."""

    start: int
    end: int


@dataclass(frozen=True)
class Plan:
    width: int
    height: int
    # The size the image is scaled to before any tiling (the original size if not scaled).
    scaled_width: int
    scaled_height: int
    # Empty: the image is sent whole.
    tiles: tuple[Tile, ...] = ()

    @property
    def scale(self) -> float:
        return self.scaled_width / self.width

    @property
    def resized(self) -> bool:
        return (self.scaled_width, self.scaled_height) != (self.width, self.height)

    @property
    def tall(self) -> bool:
        return self.height >= self.width

    def tile_size(self, tile: Tile) -> tuple[int, int]:
        length = tile.end - tile.start
        return (self.scaled_width, length) if self.tall else (length, self.scaled_height)


def plan(width: int, height: int, limits: ImageLimits, *, max_tiles: int, draft: bool = False) -> Plan:
    """The plan for a `width` x `height` image; FitRefused if there is none within `max_tiles` tiles.
    `draft`: the image can be decoded reduced (a JPEG)."""
    short, long = sorted((width, height))
    if short <= limits.min_side:
        raise FitRefused(
            "IMAGE_DIMENSIONS_OUT_OF_RANGE",
            f"the image is {width}x{height}; width and height must be more than {limits.min_side} "
            "pixels (images are never upscaled)",
        )
    if long > MAX_LONG_SIDE or width * height > MAX_PIXELS:
        raise FitRefused(
            "IMAGE_DIMENSIONS_OUT_OF_RANGE",
            f"the image is {width}x{height}; the gateway fits images of up to {MAX_LONG_SIDE} pixels "
            f"on the long side and {MAX_PIXELS:,} pixels in all",
        )
    fits_shape = long < limits.max_aspect_ratio * short
    if fits_shape and long < limits.max_side:
        return Plan(width, height, width, height)
    needed = (limits.max_side - 1) / long
    # Down to DOWNSCALE_SIDE, but never so far that the short side falls under the minimum.
    scale = max(DOWNSCALE_SIDE / long, (limits.min_side + 1) / short)
    if fits_shape and needed >= MIN_WHOLE_SCALE and scale <= needed:
        reduction = next((r for r in DRAFT_REDUCTIONS if draft and _drafted(width, height, r, limits)), None)
        if reduction is not None:
            return Plan(width, height, -(-width // reduction), -(-height // reduction))
        return Plan(width, height, round(width * scale), round(height * scale))
    return _tiled(width, height, limits, max_tiles)


def _drafted(width: int, height: int, reduction: int, limits: ImageLimits) -> bool:
    """Whether a JPEG decoded at 1/`reduction` is large enough to moderate and within the limits."""
    short, long = sorted((-(-width // reduction), -(-height // reduction)))
    return MIN_DRAFT_SIDE <= long < limits.max_side and short > limits.min_side


def _tiled(width: int, height: int, limits: ImageLimits, max_tiles: int) -> Plan:
    short, long = sorted((width, height))
    scale = min(1.0, (limits.max_side - 1) / short)
    scaled_short, scaled_long = math.floor(short * scale), round(long * scale)
    # Each tile's long side stays under both the side and the aspect-ratio limit.
    length = min(limits.max_side - 1, limits.max_aspect_ratio * scaled_short - 1, scaled_long)
    overlap = int(length * OVERLAP)
    count = 1 if scaled_long <= length else math.ceil((scaled_long - overlap) / (length - overlap))
    if count > max_tiles:
        raise FitRefused(
            "TOO_MANY_TILES",
            f"the image is {width}x{height}; it takes {count} tiles (each one a billed backend call) "
            f"and at most {max_tiles} are allowed: raise `max_tiles` (the request's, up to the route's) "
            "or send a shorter image",
        )
    step = (scaled_long - length) / (count - 1) if count > 1 else 0.0
    tiles = tuple(Tile(round(i * step), round(i * step) + length) for i in range(count))
    scaled = (scaled_short, scaled_long) if height >= width else (scaled_long, scaled_short)
    return Plan(width, height, scaled[0], scaled[1], tiles)
