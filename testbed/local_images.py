"""Images the tests and benchmarks make themselves: rendered text, QR codes, real photographs shipped by
scikit-image, and their near-duplicates. Nothing is downloaded."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import skimage.data
from PIL import Image, ImageDraw, ImageFont

# Debian's fonts-wqy-microhei (installed by .ci/run): renders Chinese and Latin text.
CJK_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")


def text_image(lines: list[str], *, size: tuple[int, int] = (640, 480), font_px: int = 32) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(str(CJK_FONT), font_px)
    for row, line in enumerate(lines):
        draw.text((24, 40 + row * font_px * 2), line, fill="black", font=font)
    return image


def qr_image(value: str, *, size: tuple[int, int] = (640, 480), module_px: int = 6) -> Image.Image:
    code = cv2.QRCodeEncoder.create().encode(value)
    code = cv2.resize(code, None, fx=module_px, fy=module_px, interpolation=cv2.INTER_NEAREST)
    quiet = 4 * module_px
    code = cv2.copyMakeBorder(code, quiet, quiet, quiet, quiet, cv2.BORDER_CONSTANT, value=(255,))
    canvas = Image.new("RGB", size, (230, 230, 240))
    canvas.paste(
        Image.fromarray(code).convert("RGB"), ((size[0] - code.shape[1]) // 2, (size[1] - code.shape[0]) // 2)
    )
    return canvas


def photo(name: str) -> Image.Image:
    array = getattr(skimage.data, name)()
    return Image.fromarray(np.asarray(array)).convert("RGB")


def encode(image: Image.Image, image_format: str = "PNG", **options: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def near_duplicates(image: Image.Image) -> dict[str, Image.Image]:
    """What re-uploads do to an image: resizing, recompression and a light crop."""
    width, height = image.size
    crop = int(min(width, height) * 0.04)
    return {
        "half": image.resize((width // 2, height // 2)),
        "double": image.resize((width * 2, height * 2)),
        "jpeg_q40": Image.open(io.BytesIO(encode(image, "JPEG", quality=40))).convert("RGB"),
        "crop": image.crop((crop, crop, width - crop, height - crop)),
    }


def animated_gif(frames: list[Image.Image]) -> bytes:
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()
