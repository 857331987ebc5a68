"""The fit bench's corpus: images IMS cannot take as they are, generated, and the origin serving them
(some behind a hotlink check, one behind a redirect)."""

from __future__ import annotations

import http.server
import io
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image, ImageDraw

from testbed.fileserver import serve_handler

# What the origin's hotlink check wants, and the routing file's `fetch_headers` send.
REFERER = "https://app.example/"
MAGENTA = (255, 0, 255)


@dataclass(frozen=True)
class Sizes:
    photo_pixels: tuple[int, int]  # random noise: megabytes of JPEG
    huge: tuple[int, int]
    screenshot: tuple[int, int]
    in_flight: int


FULL = Sizes(photo_pixels=(3_800, 2_800), huge=(12_000, 9_000), screenshot=(1_080, 30_000), in_flight=20)
QUICK = Sizes(photo_pixels=(2_200, 1_600), huge=(10_400, 5_200), screenshot=(1_080, 20_000), in_flight=6)


@dataclass(frozen=True)
class Item:
    name: str
    path: str  # on the origin
    body: bytes
    # Where the screenshot's "text" (magenta ink) is, in its own pixels: x, y, width, height.
    ink: tuple[int, int, int, int] | None = None


def _encoded(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def _noise(size: tuple[int, int], rng: random.Random) -> Image.Image:
    return Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))


def _screenshot(size: tuple[int, int], ink: tuple[int, int, int, int]) -> Image.Image:
    """A chat-like long screenshot: lines of text, and one line of magenta "ad text"."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for y in range(40, size[1] - 40, 60):
        draw.text((40, y), f"message {y // 60}: nothing to see here", fill="black")
    x, y, w, h = ink
    draw.rectangle((x, y, x + w - 1, y + h - 1), fill=MAGENTA)
    return image


def corpus(sizes: Sizes, seed: int) -> list[Item]:
    rng = random.Random(seed)
    width, height = sizes.screenshot
    # In the second-to-last tile's own part, clear of the overlaps at either end.
    ink = (120, height * 3 // 4, 480, 120)
    photo = _encoded(_noise(sizes.photo_pixels, rng), "JPEG", quality=95)
    huge = Image.linear_gradient("L").resize(sizes.huge).convert("RGB")
    small = _noise((1_024, 768), rng)
    pages = [_noise((1_600, 1_200), rng) for _ in range(2)]
    return [
        Item("photo (large file)", "/photo.jpg", photo),
        Item(f"photo {sizes.huge[0]}x{sizes.huge[1]}", "/huge.jpg", _encoded(huge, "JPEG", quality=90)),
        Item(
            f"screenshot {width}x{height}",
            "/screenshot.png",
            _encoded(_screenshot(sizes.screenshot, ink), "PNG"),
            ink,
        ),
        Item(
            "TIFF, 2 pages", "/scan.tiff", _encoded(pages[0], "TIFF", save_all=True, append_images=pages[1:])
        ),
        Item("AVIF", "/picture.avif", _encoded(_noise((1_600, 1_200), rng), "AVIF")),
        Item("behind a hotlink check", "/hot/small.jpg", _encoded(small, "JPEG", quality=85)),
        Item("behind a redirect", "/go/small.jpg", b""),
    ]


@contextmanager
def origin(items: list[Item]) -> Iterator[str]:
    """Serves the corpus: `/hot/...` only with the expected Referer, `/go/x` redirects to `/hot/x`."""
    files: Mapping[str, bytes] = {item.path: item.body for item in items if item.body}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path.startswith("/go/"):
                self._answer(302, b"", location="/hot/" + self.path.removeprefix("/go/"))
                return
            if self.path.startswith("/hot/") and self.headers.get("Referer") != REFERER:
                self._answer(403, b"hotlinking denied")
                return
            body = files.get(self.path)
            self._answer(404 if body is None else 200, body or b"")

        def _answer(self, status: int, body: bytes, location: str | None = None) -> None:
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    with serve_handler(Handler) as base_url:
        yield base_url
