"""The pixel work of a plan: decode (reduced where Pillow can), scale, cut and encode. Blocking: it
runs in a worker thread (`stage`), one image's memory at a time within the stage's budget."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from backends.image_limits import ImageLimits
from service.fitting.jpeg_markers import plain_jpeg_frame
from service.fitting.plan import FitRefused, Plan, Tile

__all__ = ["Header", "Piece", "as_given", "decode_memory", "read_header", "render"]

# Walked down until the encoding fits the backend's byte limit; below the last, the image shrinks.
JPEG_QUALITIES = (90, 80, 70, 60, 50)
SHRINK = 0.75
# Bytes per pixel in memory: Pillow keeps RGB (and RGBA) at 4.
_PIXEL_BYTES = 4


@dataclass(frozen=True)
class Header:
    format: str
    width: int
    height: int
    frames: int
    mode: str = "RGB"


@dataclass(frozen=True)
class Piece:
    """One image to send: the whole image, or one tile of it."""

    content: bytes
    width: int
    height: int
    # The format it was re-encoded to; "" if these are the bytes received.
    reencoded: str
    tile: Tile | None = None


def read_header(content: bytes) -> Header:
    """The image's format and size from its header alone; FitRefused if it is no image."""
    frame = plain_jpeg_frame(content)
    if frame is not None and not _over_pillow_cap(frame.width, frame.height):
        return Header("JPEG", frame.width, frame.height, 1, frame.mode)
    try:
        with _quiet(), Image.open(io.BytesIO(content)) as image:
            frames = getattr(image, "n_frames", 1)
            return Header(image.format or "", image.width, image.height, frames, image.mode)
    except Image.DecompressionBombError:
        # Pillow's own guard, beyond the gateway's pixel cap: named as what it is, not as corruption.
        raise FitRefused(
            "IMAGE_DIMENSIONS_OUT_OF_RANGE", "the image declares more pixels than the gateway fits"
        ) from None
    except UnidentifiedImageError:
        raise FitRefused(
            "IMAGE_UNSUPPORTED",
            "the body is not an image in any format the gateway reads (JPEG, PNG, GIF, WEBP, BMP, "
            "TIFF, AVIF, ...)",
        ) from None
    except Exception:
        # Pillow's plugins signal corrupt headers with many exception types.
        raise FitRefused("IMAGE_UNDECODABLE", "the image header is corrupt or truncated") from None


def _over_pillow_cap(width: int, height: int) -> bool:
    """Past the pixels Pillow warns about, or refuses: its own reading says which."""
    cap = Image.MAX_IMAGE_PIXELS
    return cap is not None and width * height > cap


def decode_memory(header: Header, plan: Plan) -> int:
    """Bytes rendering holds at its peak, from the header: what the stage's memory budget grants."""
    reduced = _draft_factor(header, plan)
    width, height = -(-header.width // reduced), -(-header.height // reduced)
    pixels = width * height
    if header.mode != "RGB":
        pixels *= 2  # converted to RGB beside the decoded image
    if (width, height) != (plan.scaled_width, plan.scaled_height):
        # Lanczos resamples one axis, then the other: both results are alive at the end.
        pixels += plan.scaled_width * height + plan.scaled_width * plan.scaled_height
    if plan.tiles:
        pixels += max(plan.tile_size(tile)[0] * plan.tile_size(tile)[1] for tile in plan.tiles)
    return pixels * _PIXEL_BYTES


def as_given(content: bytes, header: Header, plan: Plan, limits: ImageLimits) -> Piece | None:
    """The image as it came, when the backend takes it so: no decoding, no worker thread."""
    sendable = header.format in limits.formats and len(content) <= limits.max_bytes
    if plan.resized or plan.tiles or not sendable:
        return None
    return Piece(content, header.width, header.height, "")


def render(content: bytes, header: Header, plan: Plan, limits: ImageLimits) -> list[Piece]:
    """The re-encoded pieces to send for `plan` (an image `as_given` does not send as it came)."""
    try:
        with _quiet(), Image.open(io.BytesIO(content)) as opened:
            if header.format == "JPEG" and plan.resized:
                # Decodes at 1/2, 1/4 or 1/8 of the size straight from the DCT: the cheapest shrink.
                opened.draft("RGB", (plan.scaled_width, plan.scaled_height))
            # Of a multi-page or animated image, the first page (the one a viewer shows). Orientation
            # tags are left to the backend, as for images sent as given.
            opened.load()
            return _pieces(opened, plan, limits)
    except FitRefused:
        raise
    except Exception:
        raise FitRefused(
            "IMAGE_UNDECODABLE", "the image could not be decoded (corrupt or truncated)"
        ) from None


def _pieces(decoded: Image.Image, plan: Plan, limits: ImageLimits) -> list[Piece]:
    image = _flattened(decoded)
    if image.size != (plan.scaled_width, plan.scaled_height):
        image = image.resize((plan.scaled_width, plan.scaled_height), Image.Resampling.LANCZOS)
    if not plan.tiles:
        return [_encoded(image, limits, None)]
    return [_encoded(_cropped(image, plan, tile), limits, tile) for tile in plan.tiles]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # The gateway's own pixel cap (plan.MAX_PIXELS) is the bomb guard here; Pillow's warning is noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def _draft_factor(header: Header, plan: Plan) -> int:
    if header.format != "JPEG" or not plan.resized:
        return 1
    factor = 1
    while factor < 8 and header.width // (factor * 2) >= plan.scaled_width:
        factor *= 2
    return factor


def _flattened(image: Image.Image) -> Image.Image:
    """RGB: JPEG has no alpha, so transparency goes on white (as most viewers show it)."""
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or image.mode == "P":
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _cropped(image: Image.Image, plan: Plan, tile: Tile) -> Image.Image:
    if plan.tall:
        return image.crop((0, tile.start, image.width, tile.end))
    return image.crop((tile.start, 0, tile.end, image.height))


def _encoded(image: Image.Image, limits: ImageLimits, tile: Tile | None) -> Piece:
    """JPEG down the quality ladder, then smaller, until it fits the backend's byte limit."""
    while True:
        for quality in JPEG_QUALITIES:
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=quality, optimize=False)
            if buffer.tell() <= limits.max_bytes:
                return Piece(buffer.getvalue(), image.width, image.height, "JPEG", tile)
        smaller = (round(image.width * SHRINK), round(image.height * SHRINK))
        if min(smaller) <= limits.min_side:
            raise FitRefused("IMAGE_TOO_LARGE", "the image does not compress to the backend's size limit")
        image = image.resize(smaller, Image.Resampling.LANCZOS)
