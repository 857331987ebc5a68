"""Frame sampling for animated GIF and WEBP, as IMS's `Interval` and `MaxFrames` describe it."""

from __future__ import annotations

from collections.abc import Iterator

from PIL import Image


def sample_frames(image: Image.Image, *, interval: int, max_frames: int) -> Iterator[tuple[int, Image.Image]]:
    """(frame index, RGB frame) for frames 0, interval, 2*interval, ..., at most `max_frames` of them.

    `interval` 0 means the first frame only; `max_frames` 0 means the default, 1.
    """
    total = getattr(image, "n_frames", 1)
    step = interval if interval > 0 else total
    limit = max_frames if max_frames > 0 else 1
    for index in range(0, total, step)[:limit]:
        image.seek(index)
        yield index, image.convert("RGB")
