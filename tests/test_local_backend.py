"""The embedded backend with its real models: every check fills the right IMS result structure."""

from __future__ import annotations

import functools
import io
import ipaddress
from collections.abc import AsyncIterator

import pytest
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse, Suggestion
from PIL import Image

from backends.errors import BackendError, Kind
from backends.local.backend import LocalBackend
from backends.local.cancel import CancelToken
from backends.local.frames import DEFAULT_LIMITS, sample_frames
from backends.local.models import Models
from backends.local.settings import LocalSettings
from testbed.fileserver import serve_files
from testbed.local_images import animated_gif, encode, photo, qr_image, text_image

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
PASS, REVIEW, BLOCK = Suggestion.SUGGESTION_PASS, Suggestion.SUGGESTION_REVIEW, Suggestion.SUGGESTION_BLOCK


@pytest.fixture(scope="module")
def models() -> Models:
    loaded = Models()
    loaded.warm_up()
    return loaded


@pytest.fixture
async def backend(models: Models) -> AsyncIterator[LocalBackend]:
    local = LocalBackend(LocalSettings(), models=models)
    await local.start()
    yield local
    await local.aclose()


async def moderate(backend: LocalBackend, content: bytes, **fields: object) -> ModerateImageResponse:
    return await backend.moderate(ModerateImageRequest(content=content, **fields), timeout=30)  # type: ignore[arg-type]


async def test_text_is_read_line_by_line_and_left_to_the_gateway_s_keyword_lists(
    backend: LocalBackend,
) -> None:
    # Words that the earlier releases' keyword libraries blocked: the backend only reads them now.
    result = await moderate(backend, encode(text_image(["加微信领红包 free money", "nothing else here"])))
    assert result.suggestion == PASS
    ocr = result.ocr_results[0]
    assert "加微信" in ocr.text
    assert "free money" in ocr.text.lower()
    line = next(d for d in ocr.details if "加微信" in d.text)
    assert line.location.width > 0
    assert line.rate > 80
    assert all(not d.keywords and not d.hit_infos for d in ocr.details)
    assert result.backend == "local"
    assert result.file_md5


async def test_qr_codes_are_advertising_objects(backend: LocalBackend) -> None:
    result = await moderate(backend, encode(qr_image("https://promo.example/win?id=7")))
    assert (result.suggestion, result.label, result.sub_label) == (BLOCK, "Ad", "QrCode")
    qr = result.object_results[0]
    assert list(qr.names) == ["QRCODE"]
    assert qr.details[0].value == "https://promo.example/win?id=7"
    assert qr.details[0].location.width > 50


async def test_unrelated_photo_passes_with_a_porn_score(backend: LocalBackend) -> None:
    result = await moderate(backend, encode(photo("astronaut"), "JPEG", quality=90))
    assert result.suggestion == PASS
    porn = result.label_results[0]
    assert porn.scene == "Porn"
    assert 0 <= porn.score <= 100
    assert not result.lib_results


async def test_animated_images_sample_the_requested_frames(backend: LocalBackend) -> None:
    plain = photo("astronaut").resize((320, 320))
    # Distinct frames: Pillow merges identical consecutive ones.
    mirrored = plain.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    qr = qr_image("https://promo.example/", size=(320, 320), module_px=4)
    gif = animated_gif([plain, mirrored, qr, plain])
    assert (await moderate(backend, gif)).suggestion == PASS  # first frame only, by default
    assert (await moderate(backend, gif, interval=1, max_frames=2)).suggestion == PASS
    assert (await moderate(backend, gif, interval=2, max_frames=2)).suggestion == BLOCK
    assert (await moderate(backend, gif, interval=1, max_frames=10)).suggestion == BLOCK


def test_frame_sampling_indexes() -> None:
    frames = [photo("camera").resize((64, 64)).rotate(angle) for angle in range(0, 70, 10)]
    with Image.open(io.BytesIO(animated_gif(frames))) as image:
        sampled = functools.partial(sample_frames, image, limits=DEFAULT_LIMITS, token=CancelToken(60))
        assert [i for i, _ in sampled(interval=0, max_frames=0)] == [0]
        assert [i for i, _ in sampled(interval=3, max_frames=5)] == [0, 3, 6]
        assert [i for i, _ in sampled(interval=2, max_frames=2)] == [0, 2]


async def test_corrupt_image_is_an_invalid_request(backend: LocalBackend) -> None:
    truncated = encode(photo("astronaut"), "JPEG")[:2000]
    with pytest.raises(BackendError) as caught:
        await moderate(backend, truncated)
    assert caught.value.kind is Kind.INVALID_REQUEST


async def test_an_image_over_the_decode_budget_is_overloaded_and_a_waiting_one_gives_up_in_time(
    models: Models,
) -> None:
    # 4000x3000 RGB: about 72 MB to decode (pixels and an RGB copy), over a 64 MiB budget.
    budget = 64 * 1024 * 1024
    local = LocalBackend(LocalSettings(decode_budget_bytes=budget), models=models)
    await local.start()
    try:
        with pytest.raises(BackendError) as caught:
            await moderate(local, encode(Image.new("RGB", (4000, 3000), "white"), "JPEG"))
        assert caught.value.kind is Kind.OVERLOADED
        assert "more than the whole decode budget (64 MiB)" in caught.value.message
        # 3000x2000 fits alone (36 MB) but not twice: the second waits, then gives up before its deadline.
        image = encode(Image.new("RGB", (3000, 2000), "white"), "JPEG")
        held = await local._memory.acquire("someone", budget - 1, timeout=1)
        with pytest.raises(BackendError) as waited:
            await local.moderate(ModerateImageRequest(content=image), timeout=0.5)
        held.release()
        assert waited.value.kind is Kind.OVERLOADED
        assert (await moderate(local, image)).suggestion == PASS
    finally:
        await local.aclose()


async def test_a_downloaded_image_meets_the_header_limits_of_content(models: Models) -> None:
    tiny = encode(Image.new("RGB", (40, 40), "white"), "PNG")
    with serve_files({"/tiny.png": tiny}) as base:
        local = LocalBackend(LocalSettings(fetch_allow_networks=LOOPBACK), models=models)
        await local.start()
        try:
            with pytest.raises(BackendError) as caught:
                await local.moderate(ModerateImageRequest(url=f"{base}/tiny.png"), timeout=10)
        finally:
            await local.aclose()
    assert (caught.value.kind, caught.value.field) == (Kind.INVALID_REQUEST, "url")
    assert "the image is 40x40; each side must be more than 50" in caught.value.message
