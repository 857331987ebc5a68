"""ImageModeration parameter validation, in the order and with the codes IMS uses (ims-facts §3.1, §3.2).

Structure first (JSON object, known names, types), then values, then the image itself. JSON `null`
counts as absent: the SDK never sends one, and treating it leniently hides no client bug worth a test.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from .config import EmulatorConfig
from .errors import ImsError
from .fetch import download
from .imagecheck import inspect
from .results import Subject

MAX_FILE_CONTENT_CHARS = 10 * 1024 * 1024
# The FAQ reading: an image over 5 MB by URL is InvalidFileContentSize (the downloader itself
# takes sources up to 30 MB: emulator.fetch).
MAX_URL_IMAGE_BYTES = 5 * 1024 * 1024

# Parameter schemas: name -> JSON type (int means a JSON integer, never a bool or a float).
_REQUEST: dict[str, type] = {
    "BizType": str,
    "DataId": str,
    "FileContent": str,
    "FileUrl": str,
    "Interval": int,
    "MaxFrames": int,
    "User": dict,
    "Device": dict,
    "Type": str,
    "BizTag": str,
}
_USER: dict[str, type] = {
    "UserId": str,
    "Nickname": str,
    "AccountType": str,
    "Gender": int,
    "Age": int,
    "Level": int,
    "Phone": str,
    "Desc": str,
    "HeadUrl": str,
}
_DEVICE: dict[str, type] = {
    "Ip": str,
    "Mac": str,
    "TokenId": str,
    "DeviceId": str,
    "IMEI": str,
    "IDFA": str,
    "IDFV": str,
    "IpType": int,
}
_JSON_TYPE_NAMES = {str: "String", int: "Integer", dict: "Object"}

_DATA_ID = re.compile(r"[A-Za-z0-9_\-@#]{1,64}")
_BIZ_TYPE = re.compile(r"[A-Za-z0-9_]{3,32}")
_TYPES = ("IMAGE", "IMAGE_AIGC")
_ACCOUNT_TYPES = ("1", "2", "3", "4", "5", "6", "7")
# The inclusive range of every integer parameter; None is no upper bound (they are uint64).
_INTEGER_RANGES: dict[str, tuple[int, int | None]] = {
    "Interval": (0, None),
    "MaxFrames": (0, None),
    "User.Gender": (0, 2),
    "User.Age": (0, None),
    "User.Level": (0, 3),
    "Device.IpType": (0, 1),
}
_MAX_DESC_CHARS = 5000


def parse_json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is anything else."""
    try:
        params = json.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
        return None
    return params if isinstance(params, dict) else None


def _invalid_value(name: str, rule: str) -> ImsError:
    return ImsError("InvalidParameterValue", f"The value of parameter `{name}` is invalid: {rule}.")


def _check_structure(params: dict[str, Any], schema: dict[str, type], prefix: str = "") -> dict[str, Any]:
    """Reject unknown names and wrong types; return the parameters without nulls."""
    present: dict[str, Any] = {}
    for key, value in params.items():
        name = prefix + key
        if key not in schema:
            raise ImsError("UnknownParameter", f"The parameter `{name}` is not recognized.")
        if value is None:
            continue
        expected = schema[key]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ImsError(
                "InvalidParameter",
                f"The value type of parameter `{name}` is not valid: expected {_JSON_TYPE_NAMES[expected]}.",
            )
        present[key] = value
    return present


def _check_integers(params: dict[str, Any], prefix: str = "") -> None:
    for key, value in params.items():
        name = prefix + key
        if name in _INTEGER_RANGES:
            low, high = _INTEGER_RANGES[name]
            if value < low or (high is not None and value > high):
                bound = f"from {low} to {high}" if high is not None else f"at least {low}"
                raise _invalid_value(name, f"must be an integer {bound}")


def _check_user(user: dict[str, Any]) -> None:
    user = _check_structure(user, _USER, "User.")
    _check_integers(user, "User.")
    if "AccountType" in user and user["AccountType"] not in _ACCOUNT_TYPES:
        raise _invalid_value("User.AccountType", f"must be one of {', '.join(_ACCOUNT_TYPES)}")
    if len(user.get("Desc", "")) > _MAX_DESC_CHARS:
        raise _invalid_value("User.Desc", f"must be at most {_MAX_DESC_CHARS} characters")


def _check_device(device: dict[str, Any]) -> None:
    device = _check_structure(device, _DEVICE, "Device.")
    _check_integers(device, "Device.")


def _check_values(params: dict[str, Any]) -> None:
    if "DataId" in params and not _DATA_ID.fullmatch(params["DataId"]):
        raise ImsError(
            "InvalidParameterValue.InvalidDataId",
            "DataId must be 1 to 64 characters of letters, digits, underscores, hyphens, @ and #.",
        )
    if "BizType" in params and not _BIZ_TYPE.fullmatch(params["BizType"]):
        raise _invalid_value("BizType", "must be 3 to 32 characters of letters, digits and underscores")
    if "Type" in params and params["Type"] not in _TYPES:
        raise _invalid_value("Type", f"must be one of {', '.join(_TYPES)}")
    _check_integers(params)
    if "User" in params:
        _check_user(params["User"])
    if "Device" in params:
        _check_device(params["Device"])


def _image_bytes(params: dict[str, Any], config: EmulatorConfig) -> bytes:
    # When both are sent FileContent wins (reported by a third party; IMS docs say "one of").
    content: str = params.get("FileContent", "")
    url: str = params.get("FileUrl", "")
    if content:
        if len(content) >= MAX_FILE_CONTENT_CHARS:
            raise ImsError(
                "InvalidParameterValue.InvalidFileContentSize",
                f"FileContent is {len(content)} characters of base64; it must be less than 10 MB.",
            )
        try:
            return base64.b64decode(content, validate=True)
        except binascii.Error:
            raise ImsError(
                "InvalidParameterValue.InvalidContent", "FileContent is not valid base64."
            ) from None
    if url:
        image = download(url, allowed_hosts=config.url_fetch_allowed_hosts, timeout=config.url_fetch_timeout)
        if not image:
            raise ImsError(
                "InvalidParameterValue.EmptyImageContent", "The image downloaded from FileUrl is empty."
            )
        if len(image) > MAX_URL_IMAGE_BYTES:
            raise ImsError(
                "InvalidParameterValue.InvalidFileContentSize",
                f"The image downloaded from FileUrl is {len(image)} bytes; it must be at most 5 MB.",
            )
        return image
    raise ImsError("InvalidParameterValue.InvalidContent", "FileContent and FileUrl are both empty.")


def validate(params: dict[str, Any] | None, config: EmulatorConfig) -> Subject:
    """Check an ImageModeration request and fetch its image; raise the first IMS error found."""
    if params is None:
        raise ImsError("InvalidParameter", "The request body must be a JSON object.")
    params = _check_structure(params, _REQUEST)
    _check_values(params)
    image = _image_bytes(params, config)
    return Subject(
        image=image, info=inspect(image), data_id=params.get("DataId", ""), biz_type=params.get("BizType")
    )
