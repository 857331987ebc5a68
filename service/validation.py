"""Checks of a request, made before any backend quota is spent: its fields, and its image against the
limits its route's backends declare (`backends.image_limits`).

Image dimensions come from the header alone (Pillow opens lazily and decodes nothing here). Formats IMS
accepts but Pillow cannot read (SVG, HEIC/HEIF, JNG) are recognised by their signature and left to the
backend to measure.
"""

from __future__ import annotations

import io
import ipaddress
import re
import warnings
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from moderation.v1.moderation_service_pb2 import Gender, IpType, ModerateImageRequest, UserLevel
from PIL import Image, UnidentifiedImageError

from backends.image_limits import MAX_SIDE, ImageLimits
from common.hostnames import host_name_problem, parse_url

# Fewer bytes are no image of any format.
MIN_IMAGE_BYTES = 16
MAX_URL_LENGTH = 4096
MAX_DESC_CHARS = 5000

DATA_ID = re.compile(r"[A-Za-z0-9_\-@#]{1,64}")
BIZ_TYPE = re.compile(r"[A-Za-z0-9_]{3,32}")
IMEI = re.compile(r"[0-9]{15,17}")
# IMS's `User.AccountType`: 1 WeChat uin, 2 QQ number, 3 WeChat group uin, 4 QQ group number,
# 5 WeChat openid, 6 QQ openid, 7 any other string id.
ACCOUNT_TYPES = frozenset("1234567")
_IP_VERSIONS = {IpType.IP_TYPE_IPV4: 4, IpType.IP_TYPE_IPV6: 6}

# What Pillow reads, as IMS names the formats it accepts.
_PILLOW_FORMATS = frozenset({"BMP", "DIB", "ICO", "JPEG", "MPO", "PNG", "TIFF", "GIF", "WEBP", "AVIF"})


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str
    # UPPER_SNAKE, stable: the ErrorInfo reason when this violation is the first.
    reason: str


class ValidationError(Exception):
    def __init__(self, violations: list[FieldViolation]) -> None:
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))
        self.violations = violations


def validate(
    request: ModerateImageRequest,
    limits: ImageLimits,
    *,
    image_checked: bool = False,
    fields_checked: bool = False,
) -> None:
    """Raise `ValidationError` listing everything wrong with the request, or return.

    `limits`: what the request's route's backends take (`Route.image_limits`). `image_checked`: the
    image's bytes are known to have passed before (the verdict cache holds a verdict for them), so
    their header is not read again. `fields_checked`: `validate_fields` passed.
    """
    image = [] if image_checked else _image_violations(request, limits)
    fields = [] if fields_checked else parameter_violations(request)
    if image or fields:
        raise ValidationError([*image, *fields])


def validate_fields(request: ModerateImageRequest, limits: ImageLimits) -> None:
    """`validate`'s refusal when a field other than the image is invalid, else nothing: such requests
    are refused before the verdict cache hashes their image. The image itself is checked by `validate`
    (after a cache miss only: a hit's image passed when its verdict was cached)."""
    fields = parameter_violations(request)
    if fields:
        raise ValidationError([*_image_violations(request, limits), *fields])


def _image_violations(request: ModerateImageRequest, limits: ImageLimits) -> list[FieldViolation]:
    source = request.WhichOneof("image")
    if source == "content":
        return _content_violations(request.content, limits)
    if source == "url":
        return _url_violations("url", request.url)
    return [FieldViolation("image", "set either `content` (image bytes) or `url`", "IMAGE_MISSING")]


def _content_violations(content: bytes, limits: ImageLimits) -> list[FieldViolation]:
    if len(content) < MIN_IMAGE_BYTES:
        return [
            FieldViolation(
                "content",
                f"the image is {len(content)} bytes; at least {MIN_IMAGE_BYTES} are needed",
                "IMAGE_TOO_SMALL",
            )
        ]
    if len(content) > limits.max_bytes:
        return [
            FieldViolation(
                "content",
                f"the image is {len(content)} bytes; at most {limits.max_bytes} fit the backend's request "
                "limit (send a `url` for larger images)",
                "IMAGE_TOO_LARGE",
            )
        ]
    if _signature_only_format(content):
        return []
    try:
        size = image_size(content)
    except ValueError as exc:
        return [FieldViolation("content", str(exc), "IMAGE_UNSUPPORTED")]
    return _dimension_violations(*size, limits)


def image_size(content: bytes) -> tuple[int, int]:
    """Width and height read from the header; ValueError for anything not an accepted image."""
    try:
        with warnings.catch_warnings():
            # A decompression-bomb warning is a refusal here, not a log line.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Pillow's complaints about corrupt metadata are noise here: the size is all we need.
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(io.BytesIO(content)) as image:
                image_format, size = image.format, image.size
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ValueError(
            f"the image declares more pixels than any accepted image ({MAX_SIDE}x{MAX_SIDE})"
        ) from None
    except UnidentifiedImageError:
        raise ValueError(
            "not an image in a supported format (JPEG, PNG, GIF, WEBP, BMP, TIFF, ...)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise ValueError("the image header is corrupt or truncated") from None
    if image_format not in _PILLOW_FORMATS:
        raise ValueError(f"{image_format} images are not accepted")
    return size


def _signature_only_format(content: bytes) -> bool:
    head = content[:512].lstrip()
    is_svg = (head.startswith(b"<?xml") and b"<svg" in head) or head.startswith(b"<svg")
    is_heif = content[4:8] == b"ftyp" and content[8:12] in {
        b"heic",
        b"heix",
        b"hevc",
        b"heif",
        b"mif1",
        b"msf1",
    }
    is_jng = content.startswith(b"\x8bJNG\r\n\x1a\n")
    return is_svg or is_heif or is_jng


def _dimension_violations(width: int, height: int, limits: ImageLimits) -> list[FieldViolation]:
    low, high = limits.min_side, limits.max_side
    if not (low < width < high and low < height < high):
        return [
            FieldViolation(
                "content",
                f"the image is {width}x{height}; width and height must be more than {low} "
                f"and less than {high} pixels",
                "IMAGE_DIMENSIONS_OUT_OF_RANGE",
            )
        ]
    ratio = limits.max_aspect_ratio
    if max(width, height) >= ratio * min(width, height):
        return [
            FieldViolation(
                "content",
                f"the image is {width}x{height}; its aspect ratio must be less than {ratio}:1",
                "IMAGE_ASPECT_RATIO_TOO_LARGE",
            )
        ]
    return []


def _url_violations(field: str, url: str) -> list[FieldViolation]:
    if len(url) > MAX_URL_LENGTH:
        return [FieldViolation(field, f"the URL is longer than {MAX_URL_LENGTH} characters", "INVALID_URL")]
    try:
        parts = urlsplit(url)
        has_host = bool(parts.hostname)
    except ValueError:
        has_host = False
        parts = None
    if parts is None or parts.scheme not in {"http", "https"} or not has_host:
        return [FieldViolation(field, "must be an absolute http:// or https:// URL", "INVALID_URL")]
    try:
        # What the HTTP client would refuse (idna's A-label rules) or its resolver fail on (empty or
        # over-long labels), refused here rather than surfacing as an unexpected error later.
        host = parse_url(url).host
    except httpx.InvalidURL:
        return [FieldViolation(field, "not a valid URL", "INVALID_URL")]
    problem = host_name_problem(host)
    if problem is not None:
        return [FieldViolation(field, problem, "INVALID_URL")]
    return []


def parameter_violations(request: ModerateImageRequest) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if request.data_id and not DATA_ID.fullmatch(request.data_id):
        violations.append(
            FieldViolation("data_id", "at most 64 of the characters A-Z a-z 0-9 _ - @ #", "INVALID_DATA_ID")
        )
    if request.biz_type and not BIZ_TYPE.fullmatch(request.biz_type):
        violations.append(
            FieldViolation("biz_type", "3 to 32 of the characters A-Z a-z 0-9 _", "INVALID_BIZ_TYPE")
        )
    if request.interval < 0:
        violations.append(FieldViolation("interval", "must not be negative", "INVALID_FRAME_SAMPLING"))
    if request.max_frames < 0:
        violations.append(FieldViolation("max_frames", "must not be negative", "INVALID_FRAME_SAMPLING"))
    if request.max_tiles < 0:
        violations.append(
            FieldViolation("max_tiles", "must not be negative (0: the route's cap)", "INVALID_MAX_TILES")
        )
    if request.HasField("user"):
        violations.extend(_user_violations(request))
    if request.HasField("device"):
        violations.extend(_device_violations(request))
    return violations


def _user_violations(request: ModerateImageRequest) -> list[FieldViolation]:
    user = request.user
    violations: list[FieldViolation] = []
    if user.account_type and user.account_type not in ACCOUNT_TYPES:
        violations.append(
            FieldViolation("user.account_type", 'one of "1" to "7" (IMS\'s account types)', "INVALID_USER")
        )
    # Enums are open in proto3: a number no value names arrives as itself.
    if user.gender not in Gender.values():
        violations.append(FieldViolation("user.gender", "one of the Gender values", "INVALID_USER"))
    if user.level not in UserLevel.values():
        violations.append(FieldViolation("user.level", "one of the UserLevel values", "INVALID_USER"))
    if len(user.desc) > MAX_DESC_CHARS:
        violations.append(FieldViolation("user.desc", f"at most {MAX_DESC_CHARS} characters", "INVALID_USER"))
    if user.head_url:
        violations.extend(_url_violations("user.head_url", user.head_url))
    return violations


def _device_violations(request: ModerateImageRequest) -> list[FieldViolation]:
    device = request.device
    violations: list[FieldViolation] = []
    if device.ip_type not in IpType.values():
        violations.append(FieldViolation("device.ip_type", "one of the IpType values", "INVALID_DEVICE"))
    if device.ip:
        try:
            version = ipaddress.ip_address(device.ip).version
        except ValueError:
            violations.append(FieldViolation("device.ip", "not an IPv4 or IPv6 address", "INVALID_DEVICE"))
        else:
            if _IP_VERSIONS.get(device.ip_type, version) != version:
                violations.append(
                    FieldViolation("device.ip_type", f"`ip` is an IPv{version} address", "INVALID_DEVICE")
                )
    if device.imei and not IMEI.fullmatch(device.imei):
        violations.append(FieldViolation("device.imei", "15 to 17 digits", "INVALID_DEVICE"))
    return violations
