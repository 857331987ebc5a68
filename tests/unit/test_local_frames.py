"""The frame sampler's limits: the frame cap, the pixel budget, sizes checked before decoding, and
cancellation between frames."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from backends.local.cancel import Cancelled, CancelToken
from backends.local.frames import FrameLimits, LimitExceeded, decoded_bytes, sample_frames
from testbed.bombs import frame_flood_gif, tall_second_page_tiff


def _gif(frames: int, side: int = 60) -> Image.Image:
    return Image.open(io.BytesIO(frame_flood_gif(frames, side)))


def test_max_frames_above_the_cap_is_clamped() -> None:
    with _gif(50) as image:
        sampled = sample_frames(
            image, interval=1, max_frames=10_000, limits=FrameLimits(), token=CancelToken(60)
        )
        assert [index for index, _ in sampled] == [0, 1, 2, 3, 4]


def test_sampling_stops_at_the_last_frame() -> None:
    with _gif(7) as image:
        sampled = sample_frames(image, interval=3, max_frames=5, limits=FrameLimits(), token=CancelToken(60))
        assert [index for index, _ in sampled] == [0, 3, 6]


def test_frames_stepped_over_count_towards_the_pixel_budget() -> None:
    limits = FrameLimits(max_pixels=60 * 60 * 100)
    with _gif(500) as image:
        sampled = sample_frames(image, interval=50, max_frames=5, limits=limits, token=CancelToken(60))
        with pytest.raises(LimitExceeded, match="frame 100 would take the decoded pixels past the limit"):
            list(sampled)


def test_an_oversized_later_page_is_refused_before_it_is_decoded() -> None:
    with Image.open(io.BytesIO(tall_second_page_tiff())) as image:
        sampled = sample_frames(image, interval=1, max_frames=2, limits=FrameLimits(), token=CancelToken(60))
        assert next(sampled)[0] == 0
        with pytest.raises(LimitExceeded, match="frame 1 declares 12000x12000; each side must be less than"):
            next(sampled)
        # Refused from the header: the page's pixels were never decoded.
        assert image.tell() == 1
        assert image.tile


def test_a_later_frame_larger_than_the_first_is_refused() -> None:
    with Image.open(io.BytesIO(tall_second_page_tiff(second_side=400))) as image:
        sampled = sample_frames(image, interval=1, max_frames=2, limits=FrameLimits(), token=CancelToken(60))
        with pytest.raises(LimitExceeded, match="more pixels than the first frame"):
            list(sampled)


def test_a_cancelled_token_stops_sampling_between_frames() -> None:
    token = CancelToken(60)
    with _gif(10) as image:
        sampled = sample_frames(image, interval=1, max_frames=5, limits=FrameLimits(), token=token)
        assert next(sampled)[0] == 0
        token.cancel()
        with pytest.raises(Cancelled):
            next(sampled)


def test_a_passed_deadline_stops_sampling() -> None:
    token = CancelToken(60)
    with _gif(10) as image:
        sampled = sample_frames(image, interval=1, max_frames=5, limits=FrameLimits(), token=token)
        next(sampled)
        token.deadline = time.monotonic()  # the deadline passes between two frames
        with pytest.raises(Cancelled):
            next(sampled)


def test_frames_are_shrunk_to_the_analysis_side() -> None:
    out = io.BytesIO()
    Image.new("RGB", (4000, 1000), "white").save(out, "JPEG")
    with Image.open(out) as image:
        assert decoded_bytes(image) == 4000 * 1000 * 6
        [(_, frame)] = sample_frames(
            image, interval=0, max_frames=0, limits=FrameLimits(), token=CancelToken(60)
        )
    assert max(frame.size) <= 1920
    assert frame.mode == "RGB"
