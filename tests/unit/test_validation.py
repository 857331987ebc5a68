"""Local checks against IMS's published limits, before any quota is spent."""

from __future__ import annotations

import io
import zlib

import pytest
from moderation.v1.moderation_service_pb2 import Device, Gender, IpType, ModerateImageRequest, User, UserLevel
from PIL import Image

from backends.image_limits import IMS_IMAGE_LIMITS, ImageLimits
from service.validation import ValidationError, image_size, validate, validate_fields


def encoded(width: int, height: int, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format=image_format)
    return buffer.getvalue()


def violation_of(request: ModerateImageRequest) -> tuple[str, str]:
    with pytest.raises(ValidationError) as caught:
        validate(request, IMS_IMAGE_LIMITS)
    first = caught.value.violations[0]
    return first.field, first.reason


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"])
def test_accepted_formats(image_format: str) -> None:
    validate(ModerateImageRequest(content=encoded(300, 200, image_format)), IMS_IMAGE_LIMITS)


def test_dimensions_come_from_the_header() -> None:
    assert image_size(encoded(300, 200)) == (300, 200)


def test_valid_request_with_every_field() -> None:
    validate(
        ModerateImageRequest(
            url="https://cdn.example/cat.jpg",
            biz_type="TencentCloudDefault",
            data_id="a-Z_0@#",
            interval=2,
            max_frames=5,
            user=User(
                desc="x" * 5000,
                head_url="http://a.example/h.png",
                account_type="7",
                gender=Gender.GENDER_FEMALE,
                level=UserLevel.USER_LEVEL_HIGH,
            ),
            device=Device(ip="2001:db8::1", ip_type=IpType.IP_TYPE_IPV6, imei="12345678901234567"),
        ),
        IMS_IMAGE_LIMITS,
    )


@pytest.mark.parametrize(
    ("request_", "field", "reason"),
    [
        (ModerateImageRequest(), "image", "IMAGE_MISSING"),
        (ModerateImageRequest(content=b"tiny"), "content", "IMAGE_TOO_SMALL"),
        (
            ModerateImageRequest(content=b"\0" * (IMS_IMAGE_LIMITS.max_bytes + 1)),
            "content",
            "IMAGE_TOO_LARGE",
        ),
        (ModerateImageRequest(content=b"this is not an image at all"), "content", "IMAGE_UNSUPPORTED"),
        (ModerateImageRequest(content=encoded(300, 200)[:40]), "content", "IMAGE_UNSUPPORTED"),
        (ModerateImageRequest(content=encoded(50, 200)), "content", "IMAGE_DIMENSIONS_OUT_OF_RANGE"),
        (ModerateImageRequest(content=encoded(200, 10_000)), "content", "IMAGE_DIMENSIONS_OUT_OF_RANGE"),
        (ModerateImageRequest(content=encoded(9_000, 100)), "content", "IMAGE_ASPECT_RATIO_TOO_LARGE"),
        (ModerateImageRequest(url="ftp://a.example/x.png"), "url", "INVALID_URL"),
        (ModerateImageRequest(url="file:///etc/passwd"), "url", "INVALID_URL"),
        (ModerateImageRequest(url="https://"), "url", "INVALID_URL"),
        (ModerateImageRequest(url="http://[::1"), "url", "INVALID_URL"),
        (ModerateImageRequest(url="https://a.example/x", data_id="a" * 65), "data_id", "INVALID_DATA_ID"),
        (ModerateImageRequest(url="https://a.example/x", data_id="has space"), "data_id", "INVALID_DATA_ID"),
        (ModerateImageRequest(url="https://a.example/x", biz_type="ab"), "biz_type", "INVALID_BIZ_TYPE"),
        (
            ModerateImageRequest(url="https://a.example/x", biz_type="bad-dash"),
            "biz_type",
            "INVALID_BIZ_TYPE",
        ),
        (ModerateImageRequest(url="https://a.example/x", interval=-1), "interval", "INVALID_FRAME_SAMPLING"),
        (
            ModerateImageRequest(url="https://a.example/x", max_frames=-1),
            "max_frames",
            "INVALID_FRAME_SAMPLING",
        ),
        (ModerateImageRequest(url="https://a.example/x", max_tiles=-1), "max_tiles", "INVALID_MAX_TILES"),
        (
            ModerateImageRequest(url="https://a.example/x", user=User(desc="x" * 5001)),
            "user.desc",
            "INVALID_USER",
        ),
        (
            ModerateImageRequest(url="https://a.example/x", device=Device(ip="999.1.1.1")),
            "device.ip",
            "INVALID_DEVICE",
        ),
        (
            ModerateImageRequest(url="https://a.example/x", device=Device(imei="12ab")),
            "device.imei",
            "INVALID_DEVICE",
        ),
        *(
            (
                ModerateImageRequest(url="https://a.example/x", user=User(account_type=v)),
                "user.account_type",
                "INVALID_USER",
            )
            for v in ("9", "0", "17", " 1")
        ),
        (
            ModerateImageRequest(url="https://a.example/x", user=User(gender=Gender.ValueType(3))),
            "user.gender",
            "INVALID_USER",
        ),
        (
            ModerateImageRequest(url="https://a.example/x", user=User(level=UserLevel.ValueType(4))),
            "user.level",
            "INVALID_USER",
        ),
        (
            ModerateImageRequest(url="https://a.example/x", device=Device(ip_type=IpType.ValueType(3))),
            "device.ip_type",
            "INVALID_DEVICE",
        ),
        (
            ModerateImageRequest(
                url="https://a.example/x", device=Device(ip="192.0.2.1", ip_type=IpType.IP_TYPE_IPV6)
            ),
            "device.ip_type",
            "INVALID_DEVICE",
        ),
    ],
)
def test_violations(request_: ModerateImageRequest, field: str, reason: str) -> None:
    assert violation_of(request_) == (field, reason)


def test_every_violation_is_reported_at_once() -> None:
    with pytest.raises(ValidationError) as caught:
        validate(ModerateImageRequest(content=b"tiny", data_id="bad id", biz_type="x"), IMS_IMAGE_LIMITS)
    assert [v.field for v in caught.value.violations] == ["content", "data_id", "biz_type"]


def test_decompression_bomb_is_refused_without_decoding() -> None:
    # A PNG header declaring 60000x60000 pixels: far past Pillow's bomb limit, a few bytes long.
    png = encoded(60, 60)
    ihdr = b"IHDR" + (60000).to_bytes(4, "big") * 2 + png[24:29]
    bomb = png[:12] + ihdr + zlib.crc32(ihdr).to_bytes(4, "big") + png[33:]
    with pytest.raises(ValidationError) as caught:
        validate(ModerateImageRequest(content=bomb), IMS_IMAGE_LIMITS)
    assert caught.value.violations[0].reason == "IMAGE_UNSUPPORTED"
    assert "pixels" in caught.value.violations[0].description


@pytest.mark.parametrize(
    "content",
    [
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"></svg>',
        b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 32,
        b"\x8bJNG\r\n\x1a\n" + b"\0" * 32,
    ],
)
def test_formats_pillow_cannot_read_are_left_to_the_backend(content: bytes) -> None:
    validate(ModerateImageRequest(content=content), IMS_IMAGE_LIMITS)


def test_fields_are_checked_apart_from_the_image_and_refused_with_every_problem() -> None:
    # Only the image wrong: left to `validate`, after the cache lookup.
    validate_fields(ModerateImageRequest(content=b"tiny"), IMS_IMAGE_LIMITS)
    with pytest.raises(ValidationError) as caught:
        validate_fields(ModerateImageRequest(content=b"tiny", user=User(account_type="9")), IMS_IMAGE_LIMITS)
    assert [v.field for v in caught.value.violations] == ["content", "user.account_type"]


def test_the_image_is_checked_against_the_limits_it_is_given() -> None:
    # A route whose backends take less than IMS refuses what IMS would take, and says so by its numbers.
    narrow = ImageLimits(max_side=250, max_aspect_ratio=2, max_bytes=100_000)
    request = ModerateImageRequest(content=encoded(300, 200))
    validate(request, IMS_IMAGE_LIMITS)
    with pytest.raises(ValidationError) as caught:
        validate(request, narrow)
    [violation] = caught.value.violations
    assert violation.reason == "IMAGE_DIMENSIONS_OUT_OF_RANGE"
    assert violation.description.endswith("less than 250 pixels")
    with pytest.raises(ValidationError) as caught:
        validate(ModerateImageRequest(content=encoded(220, 100)), narrow)
    assert caught.value.violations[0].reason == "IMAGE_ASPECT_RATIO_TOO_LARGE"
    assert "less than 2:1" in caught.value.violations[0].description
