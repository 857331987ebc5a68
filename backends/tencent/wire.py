"""The IMS `ImageModeration` wire format: request parameters out, response envelope in.

Responses are parsed tolerantly, as the API evolves: null or absent lists are empty, unknown fields are
ignored. A response that says nothing usable (no envelope, no suggestion) is an error, never a pass.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import re
from typing import Any

from google.protobuf import json_format
from moderation.v1.moderation_service_pb2 import (
    Device,
    IpType,
    ModerateImageRequest,
    ModerateImageResponse,
    ModerationType,
    Suggestion,
    User,
)

from backends.errors import BackendError, Kind
from backends.scrub import LABEL, REQUEST_ID, UPSTREAM_CODE, Scrubber
from backends.tencent.codes import KIND_TEXTS, field_of, kind_of

log = logging.getLogger(__name__)

# IMS defaults conflict between its documentation pages, so both sampling parameters are always sent.
DEFAULT_INTERVAL = 0
DEFAULT_MAX_FRAMES = 1

_MODERATION_TYPES = {
    ModerationType.MODERATION_TYPE_IMAGE: "IMAGE",
    ModerationType.MODERATION_TYPE_IMAGE_AIGC: "IMAGE_AIGC",
}
_SUGGESTIONS = {
    "pass": Suggestion.Name(Suggestion.SUGGESTION_PASS),
    "review": Suggestion.Name(Suggestion.SUGGESTION_REVIEW),
    "block": Suggestion.Name(Suggestion.SUGGESTION_BLOCK),
}
# The code of every answer the gateway cannot read (the README's "unreadable responses").
MALFORMED = "MalformedResponse"
# IMS results nest five levels deep (Response, LabelResults, Details, ...); far more is hostile.
MAX_NESTING = 32
# The upstream's own text is logged only, scrubbed and cut to this.
MAX_LOGGED_MESSAGE_CHARS = 200
_NO_SECRETS = Scrubber()
# PascalCase to snake_case, keeping acronyms whole: FileMD5 -> file_md5, LabelResults -> label_results.
_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def request_params(request: ModerateImageRequest) -> dict[str, Any]:
    """The JSON parameters of one `ImageModeration` call; unset optional fields are omitted."""
    params: dict[str, Any] = {}
    if request.biz_type:
        params["BizType"] = request.biz_type
    if request.data_id:
        params["DataId"] = request.data_id
    if request.WhichOneof("image") == "content":
        params["FileContent"] = base64.b64encode(request.content).decode("ascii")
    else:
        params["FileUrl"] = request.url
    params["Interval"] = request.interval or DEFAULT_INTERVAL
    params["MaxFrames"] = request.max_frames or DEFAULT_MAX_FRAMES
    if request.HasField("user") and (user := _user_params(request.user)):
        params["User"] = user
    if request.HasField("device") and (device := _device_params(request.device)):
        params["Device"] = device
    if request.type in _MODERATION_TYPES:
        params["Type"] = _MODERATION_TYPES[request.type]
    if request.biz_tag:
        params["BizTag"] = request.biz_tag
    return params


def _user_params(user: User) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "UserId": user.user_id,
        "Nickname": user.nickname,
        "AccountType": user.account_type,
        # The proto enums number their values as IMS does (0 unknown, 1 male, ...).
        "Gender": int(user.gender),
        "Age": user.age,
        "Level": int(user.level),
        "Phone": user.phone,
        "Desc": user.desc,
        "HeadUrl": user.head_url,
    }
    return {key: value for key, value in fields.items() if value}


def _device_params(device: Device) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "Ip": device.ip,
        "Mac": device.mac,
        "TokenId": device.token_id,
        "DeviceId": device.device_id,
        "IMEI": device.imei,
        "IDFA": device.idfa,
        "IDFV": device.idfv,
    }
    params = {key: value for key, value in fields.items() if value}
    if device.ip:
        params["IpType"] = _ip_type(device)
    return params


def _ip_type(device: Device) -> int:
    """IMS numbers IPv4 as 0 and IPv6 as 1; an unspecified type is read off the address."""
    if device.ip_type == IpType.IP_TYPE_IPV6:
        return 1
    if device.ip_type == IpType.IP_TYPE_IPV4:
        return 0
    return 1 if ipaddress.ip_address(device.ip).version == 6 else 0


# What each failure to read an envelope means, in words for a caller rather than exception names; the
# first that matches, so subclasses come before their bases.
_ENVELOPE_FAULTS: tuple[tuple[type[Exception], str], ...] = (
    (json.JSONDecodeError, "not JSON"),
    (UnicodeDecodeError, "not UTF-8 text"),
    (RecursionError, "nested too deeply"),
    (KeyError, "no Response object"),
    (TypeError, "the Response is not an object"),
    (ValueError, "not JSON"),
)


def _envelope_fault(exc: Exception) -> str:
    return next(words for kind, words in _ENVELOPE_FAULTS if isinstance(exc, kind))


def parse_response(body: bytes, scrubber: Scrubber = _NO_SECRETS) -> ModerateImageResponse:
    """The result of a 200 response, or the `BackendError` its envelope carries.

    Nothing the upstream wrote reaches the gateway's messages: error codes and request ids are held to
    their grammar, messages are the gateway's own, and every string of a result has `scrubber`'s
    secrets removed (an upstream may echo the request's headers, key id and signature among them).
    """
    try:
        envelope = json.loads(body)
        payload = envelope["Response"]
        if not isinstance(payload, dict):
            raise TypeError("Response is not an object")
        payload = _snake_case(payload, scrubber)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the interpreter's stack, before our own limit applies.
        raise BackendError(
            Kind.UNAVAILABLE,
            f"IMS answered with a malformed envelope ({_envelope_fault(exc)})",
            upstream_code=MALFORMED,
        ) from None
    request_id = scrubber.token(str(payload.get("request_id") or ""), REQUEST_ID)
    error = payload.get("error")
    if error is not None:
        raise _error_from(error, request_id, scrubber)
    response = ModerateImageResponse()
    try:
        json_format.ParseDict(payload, response, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, AttributeError, OverflowError):
        # Neither the exception's text (it quotes the upstream's values) nor its name (internals).
        raise BackendError(
            Kind.UNAVAILABLE,
            "IMS answered with a result the gateway cannot read (a field of the wrong type or range)",
            upstream_code=MALFORMED,
            request_id=request_id,
        ) from None
    if response.suggestion == Suggestion.SUGGESTION_UNSPECIFIED:
        # Fail closed: a result without a recognisable verdict must not pass as clean.
        raise BackendError(
            Kind.UNAVAILABLE,
            "IMS answered without a recognisable Suggestion",
            upstream_code=MALFORMED,
            request_id=request_id,
        )
    response.request_id = request_id
    # The verdict's label becomes a metric label: a word of IMS's label grammar, or `unrecognised`.
    response.label = scrubber.token(response.label, LABEL)
    response.sub_label = scrubber.token(response.sub_label, LABEL)
    return response


def _error_from(error: Any, request_id: str, scrubber: Scrubber) -> BackendError:
    if not isinstance(error, dict):
        error = {}
    raw_code = str(error.get("code") or "")
    # Classified by what IMS said; shown only if it is a code, so nothing else rides along.
    kind = kind_of(raw_code)
    code = scrubber.token(raw_code, UPSTREAM_CODE)
    log.info(
        "IMS answered %s (request id %s): %s",
        code or "an error without a code",
        request_id,
        scrubber.excerpt(str(error.get("message") or ""), MAX_LOGGED_MESSAGE_CHARS),
    )
    return BackendError(
        kind,
        f"IMS {code or 'error without a code'}: {KIND_TEXTS[kind]}",
        upstream_code=code,
        request_id=request_id,
        field=field_of(code),
    )


def _snake_key(key: str) -> str:
    return _WORD_BOUNDARY.sub("_", key).lower()


def _snake_case(value: Any, scrubber: Scrubber, key: str = "", depth: int = 0) -> Any:
    """IMS JSON in the proto's JSON shape: snake_case keys, suggestions as enum names, secrets removed.

    ValueError past `MAX_NESTING` levels: IMS answers nest five deep, a hostile one could nest
    thousands deep and exhaust the stack of every recursive reader after this one.
    """
    if depth > MAX_NESTING:
        raise ValueError(f"nested deeper than {MAX_NESTING} levels")
    if isinstance(value, dict):
        return {_snake_key(k): _snake_case(v, scrubber, k, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake_case(item, scrubber, depth=depth + 1) for item in value]
    if isinstance(value, str):
        if key == "Suggestion":
            return _SUGGESTIONS.get(value.lower(), Suggestion.Name(Suggestion.SUGGESTION_UNSPECIFIED))
        return scrubber(value)
    return value
