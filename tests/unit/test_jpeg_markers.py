"""The plain-JPEG reading of `read_header` says what Pillow says, or nothing: checked against Pillow
on JPEGs of every kind Pillow writes, on every prefix of them (truncation) and on every byte of their
headers changed."""

from __future__ import annotations

import io
import warnings

import pytest
from PIL import Image

from emulator.images import make_jpeg
from service.fitting.jpeg_markers import JpegFrame, plain_jpeg_frame
from service.fitting.plan import FitRefused
from service.fitting.render import Header, read_header

# Pillow's own reading: (width, height, mode) of a JPEG it opens as one, None if it refuses the bytes.
Reading = tuple[int, int, str] | None


def pillow_reading(content: bytes) -> Reading:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(content)) as image:
                if image.format != "JPEG" or getattr(image, "n_frames", 1) != 1:
                    return None
                return image.width, image.height, image.mode
    except Exception:
        return None


def frame_reading(frame: JpegFrame | None) -> Reading:
    return None if frame is None else (frame.width, frame.height, frame.mode)


def _saved(mode: str, size: tuple[int, int] = (64, 48), **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, "white" if mode != "CMYK" else (0, 0, 0, 0)).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def _with_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 1
    return _saved("RGB", exif=exif.tobytes())


PLAIN = {
    "rgb": _saved("RGB"),
    "gray": _saved("L", (17, 5)),
    "cmyk": _saved("CMYK"),
    "progressive": _saved("RGB", (300, 200), progressive=True),
    "optimized": _saved("RGB", optimize=True, quality=20),
    "restart interval": _saved("RGB", restart_marker_blocks=1),
    "comment": _saved("RGB", comment=b"made by a test"),
    "4:4:4": _saved("RGB", subsampling=0),
    "the emulator's photo": make_jpeg(640, 480),
}
# Left to Pillow: segments it reads further than their length.
NOT_PLAIN = {
    "exif": _with_exif(),
    "icc profile": _saved("RGB", icc_profile=b"\0" * 200),
}


@pytest.mark.parametrize("name", PLAIN)
def test_a_plain_jpeg_is_read_as_pillow_reads_it(name: str) -> None:
    content = PLAIN[name]
    assert pillow_reading(content) is not None
    assert frame_reading(plain_jpeg_frame(content)) == pillow_reading(content)


@pytest.mark.parametrize("name", NOT_PLAIN)
def test_segments_pillow_reads_further_are_left_to_it(name: str) -> None:
    assert pillow_reading(NOT_PLAIN[name]) is not None
    assert plain_jpeg_frame(NOT_PLAIN[name]) is None


@pytest.mark.parametrize("content", [*PLAIN.values(), *NOT_PLAIN.values()])
def test_read_header_says_what_pillow_says(content: bytes) -> None:
    with Image.open(io.BytesIO(content)) as image:
        expected = Header(image.format or "", image.width, image.height, 1, image.mode)
    assert read_header(content) == expected


def _agrees(content: bytes) -> bool:
    """Nothing, or what Pillow reads."""
    frame = plain_jpeg_frame(content)
    return frame is None or frame_reading(frame) == pillow_reading(content)


def _header_end(content: bytes) -> int:
    """Where the first scan's data begins: the headers read are all before it."""
    scan = content.index(b"\xff\xda")
    return scan + 2 + int.from_bytes(content[scan + 2 : scan + 4], "big")


@pytest.mark.parametrize("name", ["rgb", "progressive", "restart interval", "comment"])
def test_every_truncation_reads_as_pillow_reads_it_or_not_at_all(name: str) -> None:
    content = PLAIN[name]
    end = _header_end(content)
    assert all(_agrees(content[:length]) for length in range(end + 8))
    # Cut inside the headers, nothing is read.
    assert all(plain_jpeg_frame(content[:length]) is None for length in range(end))


@pytest.mark.parametrize("name", ["rgb", "gray", "progressive", "comment"])
def test_every_changed_header_byte_reads_as_pillow_reads_it_or_not_at_all(name: str) -> None:
    content = PLAIN[name]
    disagreements = [
        (position, value)
        for position in range(_header_end(content))
        for value in (0x00, 0x01, 0x0F, 0x10, 0x7F, 0xC0, 0xDA, 0xE1, 0xFE, 0xFF)
        if not _agrees(content[:position] + bytes([value]) + content[position + 1 :])
    ]
    assert disagreements == []


def test_an_image_past_pillows_pixel_cap_is_left_to_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    content = PLAIN["rgb"]
    # Pillow warns above the cap and refuses above twice it: its reading, with its error, decides.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 48 // 4)
    assert plain_jpeg_frame(content) is not None
    with pytest.raises(FitRefused) as refused:
        read_header(content)
    assert refused.value.reason == "IMAGE_DIMENSIONS_OUT_OF_RANGE"
