"""The IMS wire format: every request field out, every result structure in, errors classified."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from moderation.v1.moderation_service_pb2 import (
    Device,
    Gender,
    IpType,
    ModerateImageRequest,
    ModerationType,
    Suggestion,
    User,
    UserLevel,
)

from backends.errors import BackendError, Kind
from backends.tencent.wire import parse_response, request_body
from common.scrub import REDACTED, Scrubber
from service.errors import KIND_POLICIES


def request_params(request: ModerateImageRequest) -> dict[str, Any]:
    params: dict[str, Any] = json.loads(bytes(request_body(request)))
    return params


def test_every_request_field_is_sent_under_its_ims_name() -> None:
    request = ModerateImageRequest(
        content=b"\x89PNG-image-bytes",
        biz_type="my_policy",
        data_id="id-1@a#b",
        interval=3,
        max_frames=400,
        user=User(
            user_id="u1",
            nickname="nick",
            account_type="7",
            gender=Gender.GENDER_FEMALE,
            age=30,
            level=UserLevel.USER_LEVEL_HIGH,
            phone="+8613800000000",
            desc="hi",
            head_url="https://a.example/h.png",
        ),
        device=Device(
            ip="2001:db8::1",
            mac="00:11:22:33:44:55",
            token_id="t",
            device_id="d",
            imei="123456789012345",
            idfa="A",
            idfv="V",
        ),
        type=ModerationType.MODERATION_TYPE_IMAGE_AIGC,
        biz_tag="tag",
    )
    assert request_params(request) == {
        "BizType": "my_policy",
        "DataId": "id-1@a#b",
        "FileContent": base64.b64encode(b"\x89PNG-image-bytes").decode(),
        "Interval": 3,
        "MaxFrames": 400,
        "User": {
            "UserId": "u1",
            "Nickname": "nick",
            "AccountType": "7",
            "Gender": 2,
            "Age": 30,
            "Level": 3,
            "Phone": "+8613800000000",
            "Desc": "hi",
            "HeadUrl": "https://a.example/h.png",
        },
        "Device": {
            "Ip": "2001:db8::1",
            "IpType": 1,
            "Mac": "00:11:22:33:44:55",
            "TokenId": "t",
            "DeviceId": "d",
            "IMEI": "123456789012345",
            "IDFA": "A",
            "IDFV": "V",
        },
        "Type": "IMAGE_AIGC",
        "BizTag": "tag",
    }


def test_the_image_is_spliced_in_as_base64_bytes_unescaped() -> None:
    image = bytes(range(256)) * 40
    body = bytes(request_body(ModerateImageRequest(content=image, biz_type="policy_a")))
    encoded = base64.b64encode(image)
    assert body == b'{"FileContent":"' + encoded + b'","BizType":"policy_a","Interval":0,"MaxFrames":1}'


def test_minimal_url_request_sends_sampling_defaults_explicitly() -> None:
    params = request_params(ModerateImageRequest(url="https://cdn.example/a.jpg"))
    assert params == {"FileUrl": "https://cdn.example/a.jpg", "Interval": 0, "MaxFrames": 1}


@pytest.mark.parametrize(
    ("ip", "ip_type", "expected"),
    [
        ("10.0.0.1", IpType.IP_TYPE_UNSPECIFIED, 0),
        ("::1", IpType.IP_TYPE_UNSPECIFIED, 1),
        ("10.0.0.1", IpType.IP_TYPE_IPV6, 1),
        ("::1", IpType.IP_TYPE_IPV4, 0),
    ],
)
def test_ip_type(ip: str, ip_type: IpType.ValueType, expected: int) -> None:
    params = request_params(
        ModerateImageRequest(url="https://x.example/a", device=Device(ip=ip, ip_type=ip_type))
    )
    assert params["Device"]["IpType"] == expected


FULL_RESPONSE: dict[str, Any] = {
    "Response": {
        "Suggestion": "Review",
        "Label": "Terror",
        "SubLabel": "Knife",
        "Score": 93,
        "LabelResults": [
            {
                "Scene": "Terror",
                "Suggestion": "Review",
                "Label": "Terror",
                "SubLabel": "Knife",
                "Score": 93,
                "Details": [{"Id": 0, "Name": "Knife", "Score": 93}],
            },
            {
                "Scene": "Porn",
                "Suggestion": "Pass",
                "Label": "Normal",
                "SubLabel": "",
                "Score": 1,
                "Details": None,
            },
        ],
        "ObjectResults": [
            {
                "Scene": "QrCode",
                "Suggestion": "Block",
                "Label": "Ad",
                "SubLabel": "QrCode",
                "Score": 99,
                "Names": ["QRCODE"],
                "Details": [
                    {
                        "Id": 7,
                        "Name": "QRCODE",
                        "Value": "https://qr.example/x",
                        "Score": 99,
                        "Location": {"X": 1.5, "Y": 2, "Width": 30, "Height": 31, "Rotate": 90},
                        "SubLabel": "QrCode",
                        "ObjectId": "obj-1",
                    }
                ],
            },
        ],
        "OcrResults": [
            {
                "Scene": "OCR",
                "Suggestion": "Block",
                "Label": "Ad",
                "SubLabel": "",
                "Score": 88,
                "Text": "buy now",
                "Details": [
                    {
                        "Text": "buy now",
                        "Label": "Ad",
                        "LibId": "lib1",
                        "LibName": "Ads",
                        "Keywords": ["buy"],
                        "Score": 88,
                        "Rate": 97,
                        "SubLabel": "Contact",
                        "Location": {"X": 0, "Y": 0, "Width": 10, "Height": 5, "Rotate": 0},
                        "HitInfos": [
                            {
                                "Type": "Keyword",
                                "Keyword": "buy",
                                "LibName": "Ads",
                                "Label": "Ad",
                                "Positions": [{"Start": 0, "End": 3}],
                            }
                        ],
                    }
                ],
            },
        ],
        "LibResults": [
            {
                "Scene": "Similar",
                "Suggestion": "Block",
                "Label": "Porn",
                "SubLabel": None,
                "Score": 95,
                "Details": [
                    {
                        "Id": 1,
                        "LibId": "L1",
                        "LibName": "deny",
                        "ImageId": "img-9",
                        "Label": "Porn",
                        "Tag": "t",
                        "Score": 95,
                    }
                ],
            },
        ],
        "RecognitionResults": [
            {
                "Label": "Scene",
                "Tags": [
                    {
                        "Name": "MedicalImage",
                        "Score": 30,
                        "Location": {"X": 0, "Y": 0, "Width": 0, "Height": 0, "Rotate": 0},
                    }
                ],
            },
        ],
        "DataId": "d1",
        "BizType": "TencentCloudDefault",
        "Extra": '{"QRcodeInfo":[]}',
        "FileMD5": "0123456789abcdef0123456789abcdef",
        "Reason": "llm said so",
        "StoreUrl": "https://s.example/x",
        "SomeFieldAddedNextYear": {"Nested": [1, 2]},
        "RequestId": "req-123",
    }
}


def test_every_result_structure_is_mapped() -> None:
    result = parse_response(json.dumps(FULL_RESPONSE).encode())
    assert (result.suggestion, result.label, result.sub_label, result.score) == (
        Suggestion.SUGGESTION_REVIEW,
        "Terror",
        "Knife",
        93,
    )
    assert result.request_id == "req-123"
    assert (result.data_id, result.biz_type, result.reason, result.store_url) == (
        "d1",
        "TencentCloudDefault",
        "llm said so",
        "https://s.example/x",
    )
    assert result.file_md5 == "0123456789abcdef0123456789abcdef"
    assert result.extra == '{"QRcodeInfo":[]}'
    assert result.label_results[0].details[0].name == "Knife"
    assert result.label_results[1].suggestion == Suggestion.SUGGESTION_PASS
    assert not result.label_results[1].details
    obj = result.object_results[0]
    assert obj.names == ["QRCODE"]
    assert obj.details[0].value == "https://qr.example/x"
    assert obj.details[0].object_id == "obj-1"
    assert (obj.details[0].location.x, obj.details[0].location.rotate) == (1.5, 90)
    ocr = result.ocr_results[0]
    assert ocr.text == "buy now"
    detail = ocr.details[0]
    assert (detail.lib_id, detail.lib_name, list(detail.keywords), detail.rate) == (
        "lib1",
        "Ads",
        ["buy"],
        97,
    )
    assert detail.hit_infos[0].positions[0].end == 3
    lib = result.lib_results[0]
    assert lib.sub_label == ""
    assert lib.details[0].image_id == "img-9"
    assert result.recognition_results[0].tags[0].name == "MedicalImage"


def test_null_and_absent_lists_are_empty() -> None:
    body = {
        "Response": {
            "Suggestion": "Pass",
            "Label": "Normal",
            "Score": 0,
            "LabelResults": None,
            "Extra": None,
            "RequestId": "r",
        }
    }
    result = parse_response(json.dumps(body).encode())
    assert result.suggestion == Suggestion.SUGGESTION_PASS
    assert not result.label_results
    assert not result.ocr_results
    assert result.extra == ""


def test_error_envelope_is_classified_with_its_request_id() -> None:
    body = {
        "Response": {
            "Error": {"Code": "ResourceUnavailable.ModelCallFailed", "Message": "retry"},
            "RequestId": "req-9",
        }
    }
    with pytest.raises(BackendError) as caught:
        parse_response(json.dumps(body).encode())
    assert caught.value.kind is Kind.UNAVAILABLE
    assert KIND_POLICIES[caught.value.kind].retried
    assert (caught.value.upstream_code, caught.value.request_id) == (
        "ResourceUnavailable.ModelCallFailed",
        "req-9",
    )


def test_invalid_data_id_error_names_the_field() -> None:
    body = {
        "Response": {
            "Error": {"Code": "InvalidParameterValue.InvalidDataId", "Message": "bad"},
            "RequestId": "r",
        }
    }
    with pytest.raises(BackendError) as caught:
        parse_response(json.dumps(body).encode())
    assert (caught.value.kind, caught.value.field) == (Kind.INVALID_REQUEST, "data_id")


@pytest.mark.parametrize(
    "body",
    [
        b'{"Response": {"Suggestion": "Pa',
        b"<html>bad gateway</html>",
        b"[]",
        b'{"Response": []}',
        b'{"NotResponse": {}}',
        b'{"Response": {"Label": "Normal", "RequestId": "r"}}',
        b'{"Response": {"Suggestion": "Maybe", "RequestId": "r"}}',
        b'{"Response": {"Suggestion": "Pass", "Score": "high", "RequestId": "r"}}',
        b'{"Response": {"Suggestion": "Pass", "LabelResults": {"not": "a list"}, "RequestId": "r"}}',
        # Python's json reads these as infinity, which no integer field can hold.
        b'{"Response": {"Suggestion": Infinity, "RequestId": "r"}}',
        b'{"Response": {"Suggestion": "Pass", "Score": 1e400, "RequestId": "r"}}',
        # An enum IMS never sends is not read as a suggestion (the gateway's own decision source).
        b'{"Response": {"Suggestion": "Pass", "Decision": {"Source": "Block"}, "RequestId": "r"}}',
    ],
)
def test_unusable_responses_fail_closed_and_retryable(body: bytes) -> None:
    with pytest.raises(BackendError) as caught:
        parse_response(body)
    assert caught.value.kind is Kind.UNAVAILABLE


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"not json", "not JSON"),
        (b'{"Response": "\xff"}', "not UTF-8 text"),
        (b'{"Other": {}}', "no Response object"),
        (b'{"Response": []}', "the Response is not an object"),
        (b'{"Response": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b'{"Response": {"Suggestion": "Pass", "Score": "high"}}', "cannot read"),
    ],
)
def test_an_unreadable_answer_is_described_without_internal_names(body: bytes, words: str) -> None:
    with pytest.raises(BackendError) as caught:
        parse_response(body)
    assert words in caught.value.message
    assert "Error" not in caught.value.message
    assert caught.value.kind is Kind.UNAVAILABLE


ECHOED_SECRET = "AKIDechoedKeyId0123"


@pytest.mark.parametrize(
    "spelled",
    [
        ECHOED_SECRET,
        # JSON escapes spell the same string with other bytes: the raw body holds no secret.
        "".join(f"\\u{ord(c):04x}" for c in ECHOED_SECRET),
        "\\/" + ECHOED_SECRET,
    ],
)
def test_an_echoed_secret_is_scrubbed_however_the_json_spells_it(spelled: str) -> None:
    body = (
        '{"Response": {"Suggestion": "Pass", "RequestId": "r", "FileMD5": "ok", "Extra": "key '
        + spelled
        + '"}}'
    ).encode()
    result = parse_response(body, Scrubber([ECHOED_SECRET]))
    assert ECHOED_SECRET not in str(result)
    assert result.file_md5 == "ok"
    assert result.extra.startswith("key ")
    assert result.extra.endswith(REDACTED)
