"""The local backend's evaluation set, made here from a seed (nothing is downloaded): every image with the
truth of what is on it.

- Text: sentences in Chinese or English rendered at 20-48 px, with a keyword of one of three libraries,
  or the same kind of sentence without any; varied position, colours, background (plain, dark,
  gradient, noise, a photograph behind a translucent panel), font face, sometimes a second line.
- QR codes: varied payloads, module sizes of 3-8 px, positions and backgrounds (photographs too); and
  decoys that look like codes (finder patterns over random modules, random module grids, checkerboards,
  bar stripes).
- Library: about half of scikit-image's photographs become deny samples (a near-duplicate can only deny,
  so no allow samples); their near-duplicates (half and double size, JPEG at q40-q70, a 2-5 % crop, a
  4-10 % brightness change, and all three of resizing, cropping and recompression) must match the right
  sample.
- Unrelated: the other photographs and the same near-duplicates of them, and noise textures; with the
  text and QR images they are what must not match the library.

The truth of each text image is checked with the gateway's keyword matching against the rendered
strings, so a sentence that happens to contain a keyword cannot be miscounted.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from service.policy.keywords import KeywordIndex
from service.policy.loading import load_policy
from testbed.local_images import CJK_FONT, encode, photo

SIZE = (640, 480)
MARGIN = 16
MIN_FONT_PX, MAX_FONT_PX = 20, 48
MIN_MODULE_PX, MAX_MODULE_PX = 3, 8
# Every photograph scikit-image ships in its wheel (the others need a download, or are drawings).
PHOTOS = (
    "astronaut",
    "brick",
    "camera",
    "cell",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "microaneurysms",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
)


@dataclass(frozen=True)
class KeywordSet:
    id: str
    name: str
    label: str
    words: dict[str, tuple[str, ...]]


LIBRARIES = (
    KeywordSet(
        "ads",
        "Advertising",
        "Ad",
        {
            "en": ("free money", "click the link", "work from home", "casino bonus"),
            "zh": ("加微信", "免费领取", "扫码进群", "刷单返利"),
        },
    ),
    KeywordSet(
        "abuse",
        "Abuse",
        "Abuse",
        {"en": ("idiot", "loser", "shut up"), "zh": ("傻瓜", "滚出去", "废物")},
    ),
    KeywordSet(
        "illegal",
        "Illegal goods",
        "Illegal",
        {"en": ("fake passport", "buy guns", "stolen cards"), "zh": ("代开发票", "赌博网站", "假证件")},
    ),
)
# `{}` takes a keyword or a neutral phrase; short ones let large fonts fit the width too.
TEMPLATES = {
    "en": (
        "{}",
        "Try {} now",
        "Notice: {} today",
        "Reply now for {} tonight",
        "They told me about {} yesterday",
        "Ask about {} at the front desk",
        "My neighbour keeps talking about {} again",
    ),
    # Chinese text is punctuated with full-width marks, which OCR must read past.
    "zh": (
        "{}",
        "请注意{}",
        "公告：{}已经开始",  # noqa: RUF001
        "朋友告诉我{}的消息",
        "今天下午{}，欢迎参加",  # noqa: RUF001
        "限时活动：{}，先到先得，名额有限",  # noqa: RUF001
    ),
}
NEUTRAL_PHRASES = {
    "en": ("fresh bread", "the garden party", "our new library", "the morning train", "spring flowers"),
    "zh": ("喝杯咖啡", "去公园散步", "读一本书", "春天的花", "学校运动会", "周末音乐会"),
}
SECOND_LINES = (
    "The meeting starts at nine",
    "Please keep the door closed",
    "Open every day from 8 to 6",
    "今天天气很好",
    "欢迎光临本店",
    "下一站是人民广场",
)
# The classes of images, as reported.
TEXT_KEYWORD, TEXT_PLAIN = "text with a keyword", "text without a keyword"
QR_CODE, QR_DECOY = "QR code", "QR decoy"
PHOTOGRAPH, LIBRARY_VARIANT, UNRELATED_VARIANT = (
    "photograph",
    "library near-duplicate",
    "unrelated near-duplicate",
)
NOISE = "noise texture"
QR_HOSTS = ("promo.example", "shop.example.cn", "t.example.com", "win.example.org")


@dataclass(frozen=True)
class Case:
    name: str
    group: str
    content: bytes
    # (library id, keyword) rendered on the image.
    keyword: tuple[str, str] | None = None
    font_px: int = 0
    # The exact value of the QR code on the image.
    qr: str | None = None
    # The library sample this image should match.
    sample: str | None = None
    # A photograph not in the deny library, or derived from one: it must not be blocked.
    neutral: bool = False
    # How a near-duplicate was made (`half`, `crop`, ...).
    variant: str = ""


@dataclass(frozen=True)
class Library:
    keywords: Path
    deny: Path


class KeywordFinder:
    """The gateway's keyword matching, one index per list, so that every list's hit in a text is seen."""

    def __init__(self, policy: Path) -> None:
        default = load_policy(policy).default.keywords
        assert default is not None, "the policy has keyword lists"
        self._indexes = [KeywordIndex([keyword_list]) for keyword_list in default.lists]

    def find(self, text: str) -> set[tuple[str, str]]:
        """(list name, entry) of each list's hit."""
        return {
            (hit.list.name, hit.entry) for index in self._indexes if (hit := index.find(text)) is not None
        }


def write_keyword_policy(folder: Path) -> Path:
    """A policy in `folder` with one keyword list per library, each a file beside it, every BizType's."""
    folder.mkdir(parents=True, exist_ok=True)
    tables = []
    for library in LIBRARIES:
        words = [word for language in ("en", "zh") for word in library.words[language]]
        (folder / f"{library.id}.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
        tables.append(
            f"[keyword_lists.{library.id}]\nfile = {json.dumps(library.id + '.txt')}\n"
            f'label = {json.dumps(library.label)}\naction = "block"\n'
        )
    ids = json.dumps([library.id for library in LIBRARIES])
    path = folder / "policy.toml"
    path.write_text("\n".join(tables) + f"\n[default]\nkeyword_lists = {ids}\n", encoding="utf-8")
    return path


def photographs() -> dict[str, Image.Image]:
    return {name: photo(name) for name in PHOTOS}


class CaseMaker:
    def __init__(
        self, seed: int, photos: dict[str, Image.Image], finder: KeywordFinder, library_share: float = 0.0
    ) -> None:
        """`library_share` of the photographs go to the sample library, as deny samples."""
        self._rng = random.Random(seed)
        self._photos = photos
        names = list(PHOTOS)
        self._rng.shuffle(names)
        self._library = names[: round(len(names) * library_share)]
        # Text over a sample photograph would be a true near-duplicate of it, not an unrelated image.
        self._backgrounds = [name for name in PHOTOS if name not in self._library]
        self._finder = finder

    # Backgrounds and encodings.

    def _background(self) -> tuple[Image.Image, str]:
        """A canvas, and its tone: `light`, `dark` or `photo`."""
        rng = self._rng
        kind = rng.choice(("plain", "dark", "gradient", "noise", "photo"))
        if kind == "dark":
            return Image.new("RGB", SIZE, self._colour(0, 60)), "dark"
        if kind == "photo":
            return self._photo_crop(rng.choice(self._backgrounds)), "photo"
        if kind == "gradient":
            start, end = np.array(self._colour(190, 255)), np.array(self._colour(190, 255))
            ramp = np.linspace(0, 1, SIZE[0])[None, :, None]
            row = (start + (end - start) * ramp).astype(np.uint8)
            return Image.fromarray(np.repeat(row, SIZE[1], axis=0)), "light"
        if kind == "noise":
            noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 12, (SIZE[1], SIZE[0], 3))
            pixels = np.clip(np.array(self._colour(200, 240)) + noise, 0, 255).astype(np.uint8)
            return Image.fromarray(pixels), "light"
        return Image.new("RGB", SIZE, self._colour(200, 255)), "light"

    def _photo_crop(self, name: str) -> Image.Image:
        """The photograph scaled to cover the canvas, cropped at a random offset."""
        image = self._photos[name]
        scale = max(SIZE[0] / image.width, SIZE[1] / image.height)
        scaled = image.resize(
            (max(SIZE[0], round(image.width * scale)), max(SIZE[1], round(image.height * scale)))
        )
        left = self._rng.randint(0, scaled.width - SIZE[0])
        top = self._rng.randint(0, scaled.height - SIZE[1])
        return scaled.crop((left, top, left + SIZE[0], top + SIZE[1]))

    def _colour(self, low: int, high: int) -> tuple[int, int, int]:
        return (self._rng.randint(low, high), self._rng.randint(low, high), self._rng.randint(low, high))

    def _encode(self, image: Image.Image) -> bytes:
        """Mostly PNG, as screenshots and posters are; some JPEG, as photos of them are."""
        if self._rng.random() < 0.7:
            return encode(image)
        return encode(image, "JPEG", quality=self._rng.randint(75, 95))

    def _panel(self, canvas: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
        """A translucent light panel behind text on a photograph, as posters have."""
        overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
        ImageDraw.Draw(overlay).rectangle(box, fill=(255, 255, 255, self._rng.randint(170, 220)))
        return Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB")

    # Text.

    def _sentence(self, language: str, filler: str, font: ImageFont.FreeTypeFont) -> str:
        fitting = [t for t in TEMPLATES[language] if font.getlength(t.format(filler)) <= SIZE[0] - 2 * MARGIN]
        return self._rng.choice(fitting).format(filler)

    def _text_image(self, language: str, filler: str) -> tuple[Image.Image, list[str], int]:
        rng = self._rng
        font_px = rng.randint(MIN_FONT_PX, MAX_FONT_PX)
        # The .ttc holds a proportional face and a monospaced one.
        font = ImageFont.truetype(str(CJK_FONT), font_px, index=rng.randrange(2))
        lines = [self._sentence(language, filler, font)]
        if rng.random() < 1 / 3:
            second = rng.choice([s for s in SECOND_LINES if font.getlength(s) <= SIZE[0] - 2 * MARGIN])
            lines.insert(rng.randrange(2), second)
        gap = round(font_px * rng.uniform(1.4, 2.2))
        width = max(round(font.getlength(line)) for line in lines)
        height = font_px + gap * (len(lines) - 1) + font_px // 3
        x = rng.randint(MARGIN, SIZE[0] - MARGIN - width)
        y = rng.randint(MARGIN, SIZE[1] - MARGIN - height)
        canvas, tone = self._background()
        if tone == "photo":
            pad = font_px // 2
            canvas = self._panel(canvas, (x - pad, y - pad, x + width + pad, y + height + pad))
        ink = self._colour(190, 255) if tone == "dark" else self._colour(0, 90)
        draw = ImageDraw.Draw(canvas)
        for row, line in enumerate(lines):
            draw.text((x, y + row * gap), line, fill=ink, font=font)
        return canvas, lines, font_px

    def _found(self, lines: list[str]) -> set[tuple[str, str]]:
        return {found for line in lines for found in self._finder.find(line)}

    def text_cases(self, count: int) -> Iterator[Case]:
        """`count` images with a keyword, then `count` without, half of each in Chinese."""
        for index in range(count):
            library = LIBRARIES[index % len(LIBRARIES)]
            language = ("en", "zh")[index % 2]
            keyword = self._rng.choice(library.words[language])
            image, lines, font_px = self._text_image(language, keyword)
            assert self._found(lines) == {(library.id, keyword)}, (lines, keyword)
            yield Case(
                f"text-{language}-{library.id}-{index}",
                TEXT_KEYWORD,
                self._encode(image),
                keyword=(library.id, keyword),
                font_px=font_px,
            )
        for index in range(count):
            language = ("en", "zh")[index % 2]
            image, lines, font_px = self._text_image(language, self._rng.choice(NEUTRAL_PHRASES[language]))
            assert not self._found(lines), lines
            yield Case(
                f"text-{language}-plain-{index}",
                TEXT_PLAIN,
                self._encode(image),
                font_px=font_px,
            )

    def mixed_images(self, count: int) -> list[bytes]:
        """Photographs and text images (half with a keyword), all 640x480: a throughput workload."""
        images = []
        for index in range(count):
            if index % 2 == 0:
                images.append(encode(self._photo_crop(PHOTOS[index // 2 % len(PHOTOS)]), "JPEG", quality=90))
            else:
                language = ("en", "zh")[index // 2 % 2]
                words = LIBRARIES[0].words[language] if index % 4 == 1 else NEUTRAL_PHRASES[language]
                images.append(self._encode(self._text_image(language, self._rng.choice(words))[0]))
        return images

    # QR codes and decoys.

    def _payload(self) -> str:
        rng = self._rng

        def token(low: int, high: int) -> str:
            return "".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(low, high)))

        return rng.choice(
            (
                lambda: f"https://{rng.choice(QR_HOSTS)}/{token(3, 24)}?id={rng.randint(1, 10**6)}",
                lambda: f"WIFI:T:WPA;S:{token(4, 12)};P:{token(8, 20)};;",
                lambda: f"tel:+86{rng.randint(10**10, 10**11 - 1)}",
                lambda: token(8, 120),
            )
        )()

    def _place(self, modules: np.ndarray, module_px: int) -> Image.Image:
        """`modules` (0 black, 255 white) scaled, with a 4-module white quiet zone, on a background."""
        limit = min(SIZE) - 2 * MARGIN
        while module_px > MIN_MODULE_PX and (modules.shape[0] + 8) * module_px > limit:
            module_px -= 1
        scaled = cv2.resize(modules, None, fx=module_px, fy=module_px, interpolation=cv2.INTER_NEAREST)
        quiet = 4 * module_px
        code = cv2.copyMakeBorder(scaled, quiet, quiet, quiet, quiet, cv2.BORDER_CONSTANT, value=(255,))
        canvas, _ = self._background()
        x = self._rng.randint(MARGIN, SIZE[0] - MARGIN - code.shape[1])
        y = self._rng.randint(MARGIN, SIZE[1] - MARGIN - code.shape[0])
        canvas.paste(Image.fromarray(code).convert("RGB"), (x, y))
        return canvas

    def qr_cases(self, count: int) -> Iterator[Case]:
        """`count` images with a QR code, then `count` decoys."""
        for index in range(count):
            value = self._payload()
            modules = cv2.QRCodeEncoder.create().encode(value)
            image = self._place(modules, self._rng.randint(MIN_MODULE_PX, MAX_MODULE_PX))
            yield Case(f"qr-{index}", QR_CODE, self._encode(image), qr=value)
        decoys: tuple[Callable[[int], np.ndarray], ...] = (
            self._fake_code,
            self._module_grid,
            self._checkerboard,
            self._stripes,
        )
        for index in range(count):
            modules = decoys[index % len(decoys)](self._rng.randint(21, 45))
            image = self._place(modules, self._rng.randint(MIN_MODULE_PX, MAX_MODULE_PX))
            yield Case(f"qr-decoy-{index}", QR_DECOY, self._encode(image))

    def _module_grid(self, side: int) -> np.ndarray:
        noise = np.random.default_rng(self._rng.randrange(2**32)).random((side, side))
        return np.where(noise < 0.5, 0, 255).astype(np.uint8)

    def _fake_code(self, side: int) -> np.ndarray:
        """Random modules under a real code's three finder patterns: a detector's worst case."""
        grid = self._module_grid(side)
        finder = np.zeros((7, 7), np.uint8)
        finder[1:6, 1:6] = 255
        finder[2:5, 2:5] = 0
        for top, left in ((0, 0), (0, side - 7), (side - 7, 0)):
            # The white separator around each finder pattern, as in a real code.
            grid[max(top - 1, 0) : top + 8, max(left - 1, 0) : left + 8] = 255
            grid[top : top + 7, left : left + 7] = finder
        return grid

    def _checkerboard(self, side: int) -> np.ndarray:
        cell = self._rng.randint(1, 3)
        rows, cols = np.indices((side, side)) // cell
        return np.where((rows + cols) % 2 == 0, 0, 255).astype(np.uint8)

    def _stripes(self, side: int) -> np.ndarray:
        widths = np.random.default_rng(self._rng.randrange(2**32)).integers(1, 4, side)
        pattern = np.repeat(np.arange(side) % 2, widths)[:side]
        return np.tile(np.where(pattern == 0, 0, 255).astype(np.uint8), (side, 1))

    # Photographs, the library and unrelated images.

    def near_duplicates(self, image: Image.Image) -> dict[str, bytes]:
        """What re-uploads do to an image, each re-encoded as the JPEG it would be uploaded as."""
        rng = self._rng
        width, height = image.size

        def crop(share: float, source: Image.Image) -> Image.Image:
            dx, dy = round(source.width * share), round(source.height * share)
            left, top = rng.randint(0, dx), rng.randint(0, dy)
            return source.crop((left, top, left + source.width - dx, top + source.height - dy))

        brightness = rng.choice((-1, 1)) * rng.uniform(0.04, 0.10)
        return {
            "half": encode(image.resize((width // 2, height // 2)), "JPEG", quality=92),
            "double": encode(image.resize((width * 2, height * 2)), "JPEG", quality=92),
            "jpeg": encode(image, "JPEG", quality=rng.randint(40, 70)),
            "crop": encode(crop(rng.uniform(0.02, 0.05), image), "JPEG", quality=92),
            "brightness": encode(ImageEnhance.Brightness(image).enhance(1 + brightness), "JPEG", quality=92),
            "all": encode(
                crop(0.03, image.resize((width * 3 // 4, height * 3 // 4))),
                "JPEG",
                quality=rng.randint(50, 70),
            ),
        }

    def library_cases(self, library: Library) -> Iterator[Case]:
        """Puts the library's photographs in its folders; yields every photograph not in the deny folder,
        and near-duplicates of them all."""
        for name in PHOTOS:
            image = self._photos[name]
            sample = name if name in self._library else None
            if sample is not None:
                image.save(library.deny / f"{name}.png")
            neutral = sample is None
            if neutral:
                yield Case(name, PHOTOGRAPH, encode(image, "JPEG", quality=90), sample=sample, neutral=True)
            for variant, content in self.near_duplicates(image).items():
                group = LIBRARY_VARIANT if sample else UNRELATED_VARIANT
                yield Case(
                    f"{name}-{variant}", group, content, sample=sample, neutral=neutral, variant=variant
                )

    def noise_cases(self, count: int) -> Iterator[Case]:
        """Textures with no content at all: white, blurred, smooth and grey noise."""
        for index in range(count):
            numbers = np.random.default_rng(self._rng.randrange(2**32))
            white: np.ndarray = numbers.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
            kind = index % 4
            if kind == 1:
                white = cv2.GaussianBlur(white, (0, 0), self._rng.uniform(1, 4))
            elif kind == 2:
                small = numbers.integers(0, 256, (6, 8, 3), dtype=np.uint8)
                white = cv2.resize(small, SIZE, interpolation=cv2.INTER_CUBIC)
            elif kind == 3:
                white = np.repeat(white[:, :, :1], 3, axis=2)
            image = Image.fromarray(white)
            yield Case(f"noise-{index}", NOISE, encode(image, "JPEG", quality=90))
