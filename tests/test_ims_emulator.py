"""The IMS emulator speaks IMS: official SDK, signatures, limits, validation, faults, over real sockets."""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw
from tencentcloud.common import credential
from tencentcloud.common.common_client import CommonClient
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile

from backends.tencent.signing import authorization, utc_date
from emulator import EmulatorConfig, Faults, ImsEmulator
from emulator.errors import ImsError
from emulator.images import format_marker, make_gif, make_jpeg, make_png
from emulator.validation import MAX_FILE_CONTENT_CHARS, MAX_URL_IMAGE_BYTES, validate
from tests.support.eventually import eventually_blocking

SECRET_ID = "AKIDEMULATORTESTEMULATORTEST00000001"
SECRET_KEY = "emulator-test-secret-key-0123456789"
PROJECT_ROOT = Path(__file__).resolve().parents[1]

Json = dict[str, Any]


@pytest.fixture
def emu() -> Iterator[ImsEmulator]:
    with ImsEmulator(EmulatorConfig(secret_id=SECRET_ID, secret_key=SECRET_KEY)) as emulator:
        yield emulator


def image_params(marker: str | None = None, image: bytes | None = None, **extra: Any) -> Json:
    data = image if image is not None else make_png(marker=marker)
    return {"FileContent": base64.b64encode(data).decode(), **extra}


def signed_headers(
    port: int,
    body: bytes,
    *,
    timestamp: int | None = None,
    secret_id: str = SECRET_ID,
    secret_key: str = SECRET_KEY,
    overrides: dict[str, str] | None = None,
) -> dict[str, str]:
    """The headers the SDK sends; `overrides` replace, or with "" drop, headers (X-TC-* by suffix)."""
    ts = int(time.time()) if timestamp is None else timestamp
    host = f"127.0.0.1:{port}"
    headers = {
        "Content-Type": "application/json",
        "Host": host,
        "X-TC-Action": "ImageModeration",
        "X-TC-Version": "2020-12-29",
        "X-TC-Region": "ap-guangzhou",
        "X-TC-Timestamp": str(ts),
        "Authorization": authorization(
            secret_id=secret_id,
            secret_key=secret_key,
            timestamp=ts,
            service="ims",
            host=host,
            content_type="application/json",
            body=body,
        ),
    }
    for name, value in (overrides or {}).items():
        key = name if name in headers else f"X-TC-{name}"
        if value:
            headers[key] = value
        else:
            headers.pop(key, None)
    return headers


def post(
    emu: ImsEmulator,
    params: Json,
    *,
    client: httpx.Client | None = None,
    timeout: float = 5.0,
    timestamp: int | None = None,
    secret_id: str = SECRET_ID,
    overrides: dict[str, str] | None = None,
) -> httpx.Response:
    body = json.dumps(params).encode()
    headers = signed_headers(emu.port, body, timestamp=timestamp, secret_id=secret_id, overrides=overrides)
    sender = client if client is not None else httpx
    return sender.post(emu.url, content=body, headers=headers, timeout=timeout)


def raw_request(emu: ImsEmulator, body: bytes, *, secret_id: str = SECRET_ID) -> bytes:
    """A signed POST of `body` as bytes on the wire, for a test that sends it on a socket of its own."""
    fields = {
        **signed_headers(emu.port, body, secret_id=secret_id),
        "Content-Length": str(len(body)),
        "Connection": "close",
    }
    head = "POST / HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return head.encode() + b"\r\n" + body


def answer(response: httpx.Response) -> Json:
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    result: Json = response.json()["Response"]
    assert result["RequestId"]
    return result


def error_code(response: httpx.Response) -> str | None:
    error: Json | None = answer(response).get("Error")
    return None if error is None else str(error["Code"])


def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    eventually_blocking(condition, within=timeout, every=0.01)


def sdk_client(emu: ImsEmulator, *, secret_key: str = SECRET_KEY, token: str | None = None) -> Any:
    http_profile = HttpProfile()
    http_profile.endpoint = f"127.0.0.1:{emu.port}"
    http_profile.scheme = "http"
    cred = credential.Credential(SECRET_ID, secret_key, token)
    return CommonClient(
        "ims", "2020-12-29", cred, "ap-guangzhou", profile=ClientProfile(httpProfile=http_profile)
    )


# --- the official SDK ---------------------------------------------------------------------------


def test_official_sdk_gets_pass_and_block(emu: ImsEmulator) -> None:
    client = sdk_client(emu)
    passed = client.call_json("ImageModeration", image_params(DataId="sdk-1"))["Response"]
    blocked = client.call_json("ImageModeration", image_params("IMSEMU:Block:Porn:SexBehavior:97"))[
        "Response"
    ]

    assert (passed["Suggestion"], passed["Label"], passed["SubLabel"], passed["Score"]) == (
        "Pass",
        "Normal",
        "",
        0,
    )
    assert passed["DataId"] == "sdk-1"
    assert (blocked["Suggestion"], blocked["Label"], blocked["SubLabel"], blocked["Score"]) == (
        "Block",
        "Porn",
        "SexBehavior",
        97,
    )
    assert emu.stats.billed == 2


def test_official_sdk_with_a_wrong_key_gets_signature_failure(emu: ImsEmulator) -> None:
    with pytest.raises(TencentCloudSDKException) as raised:
        sdk_client(emu, secret_key="not-the-key").call_json("ImageModeration", image_params())
    assert raised.value.get_code() == "AuthFailure.SignatureFailure"
    assert raised.value.get_request_id()
    assert emu.stats.billed == 0


def test_official_sdk_unsigned_payload_and_session_token(emu: ImsEmulator) -> None:
    emu.config.tokens = {"session-token"}
    client = sdk_client(emu, token="session-token")
    client.profile.unsignedPayload = True
    assert client.call_json("ImageModeration", image_params())["Response"]["Suggestion"] == "Pass"

    with pytest.raises(TencentCloudSDKException) as raised:
        sdk_client(emu, token="stale-token").call_json("ImageModeration", image_params())
    assert raised.value.get_code() == "AuthFailure.TokenFailure"


# --- headers and TC3 authentication -------------------------------------------------------------


def test_old_timestamp_is_signature_expire(emu: ImsEmulator) -> None:
    response = post(emu, image_params(), timestamp=int(time.time()) - 301)
    assert error_code(response) == "AuthFailure.SignatureExpire"


@pytest.mark.parametrize(
    ("date_shift", "service", "terminator"),
    [(86400, "ims", "tc3_request"), (0, "cvm", "tc3_request"), (0, "ims", "tc2_request")],
    ids=["next-day-date", "wrong-service", "wrong-terminator"],
)
def test_wrong_credential_scope_is_signature_failure(
    emu: ImsEmulator, date_shift: int, service: str, terminator: str
) -> None:
    body = json.dumps(image_params()).encode()
    now = int(time.time())
    headers = signed_headers(emu.port, body, timestamp=now)
    right_scope = f"{utc_date(now)}/ims/tc3_request"
    headers["Authorization"] = headers["Authorization"].replace(
        right_scope, f"{utc_date(now + date_shift)}/{service}/{terminator}"
    )
    assert error_code(httpx.post(emu.url, content=body, headers=headers)) == "AuthFailure.SignatureFailure"


def test_body_changed_after_signing_is_signature_failure(emu: ImsEmulator) -> None:
    body = json.dumps(image_params()).encode()
    headers = signed_headers(emu.port, body)
    tampered = body.replace(b"{", b'{"DataId": "x", ', 1)
    assert (
        error_code(httpx.post(emu.url, content=tampered, headers=headers)) == "AuthFailure.SignatureFailure"
    )


def test_unknown_secret_id_is_secret_id_not_found(emu: ImsEmulator) -> None:
    response = post(emu, image_params(), secret_id="AKIDSOMEONEELSE")
    assert error_code(response) == "AuthFailure.SecretIdNotFound"


@pytest.mark.parametrize(
    ("header", "value", "code"),
    [
        ("Authorization", "", "AuthFailure.InvalidAuthorization"),
        ("Authorization", "HmacSHA256 Signature=abc", "AuthFailure.InvalidAuthorization"),
        ("Action", "", "MissingParameter"),
        ("Version", "", "MissingParameter"),
        ("Timestamp", "", "MissingParameter"),
        ("Region", "", "MissingParameter"),
        ("Action", "CreateImageModerationAsyncTask", "InvalidAction"),
        ("Version", "2020-07-13", "NoSuchVersion"),
        ("Region", "ap-nowhere", "UnsupportedRegion"),
        ("Content-Type", "application/x-www-form-urlencoded", "InvalidParameter"),
    ],
)
def test_header_problems_get_their_code(emu: ImsEmulator, header: str, value: str, code: str) -> None:
    assert error_code(post(emu, image_params(), overrides={header: value})) == code
    assert emu.stats.errors_by_code == {code: 1}
    assert emu.stats.billed == 0


def test_methods_other_than_post_are_unsupported_protocol(emu: ImsEmulator) -> None:
    assert error_code(httpx.get(emu.url)) == "UnsupportedProtocol"


def test_oversized_body_is_request_size_limit_exceeded_and_keeps_the_connection(emu: ImsEmulator) -> None:
    with httpx.Client() as client:
        huge = {"FileContent": "A" * (10 * 1024 * 1024)}
        assert error_code(post(emu, huge, client=client)) == "RequestSizeLimitExceeded"
        assert answer(post(emu, image_params(), client=client))["Suggestion"] == "Pass"


def test_chunked_request_body_is_accepted(emu: ImsEmulator) -> None:
    body = json.dumps(image_params()).encode()
    response = httpx.post(
        emu.url, content=iter([body[:100], body[100:]]), headers=signed_headers(emu.port, body)
    )
    assert answer(response)["Suggestion"] == "Pass"


# --- rate limit and latency ---------------------------------------------------------------------


def test_rate_limit_rejects_exactly_the_excess_of_a_burst(emu: ImsEmulator) -> None:
    emu.config.qps_limit = 5
    with httpx.Client() as client:
        codes = [error_code(post(emu, image_params(), client=client)) for _ in range(8)]
        limited = answer(post(emu, image_params(), client=client))
        time.sleep(1.05)  # the window slides: admitted again
        after_window = error_code(post(emu, image_params(), client=client))

    assert codes == [None] * 5 + ["RequestLimitExceeded"] * 3
    assert limited["Error"]["Message"] == (
        "Your current request times equals to `6` in a second, which exceeds the frequency limit `5` "
        "for a second. Please reduce the frequency of calls."
    )
    assert after_window is None
    assert (emu.stats.rate_limited, emu.stats.billed, emu.stats.max_in_one_second) == (4, 6, 5)


@pytest.mark.parametrize("stamp", ["request-line", "after-body"])
def test_arrival_is_stamped_at_the_request_line_or_after_a_slowly_sent_body(
    emu: ImsEmulator, stamp: str
) -> None:
    emu.config.arrival_stamp = stamp
    body = json.dumps(image_params()).encode()
    request = raw_request(emu, body)
    with socket.create_connection(("127.0.0.1", emu.port)) as sock:
        sock.sendall(request[: len(request) - len(body) // 2])
        wait_until(lambda: emu.stats.requests == 1)  # the handler has read the request line
        half_sent = time.monotonic()
        sock.sendall(request[len(request) - len(body) // 2 :])
        response = b"".join(iter(lambda: sock.recv(65536), b""))

    assert b'"Suggestion": "Pass"' in response
    arrival = emu.stats.latest_arrival
    assert arrival is not None
    assert (arrival < half_sent) if stamp == "request-line" else (arrival > half_sent)


def test_each_call_is_stamped_with_its_arrival_and_the_port_of_the_connection_it_came_on(
    emu: ImsEmulator,
) -> None:
    emu.config.qps_limit = 1
    ports = []
    for secret_id in (SECRET_ID, SECRET_ID, "AKIDunknown"):
        body = json.dumps(image_params()).encode()
        with socket.create_connection(("127.0.0.1", emu.port)) as sock:
            ports.append(sock.getsockname()[1])
            sock.sendall(raw_request(emu, body, secret_id=secret_id))
            b"".join(iter(lambda: sock.recv(65536), b""))

    # The second was rate limited, and is stamped all the same; the third never authenticated.
    assert emu.stats.rate_limited == 1
    assert [port for _, port in emu.stats.arrivals] == ports[:2]
    # The stamp the rate limit judged: the admitted one's is its latest arrival.
    assert emu.stats.latest_arrival == emu.stats.arrivals[0][0] <= emu.stats.arrivals[1][0]


def test_an_unknown_arrival_stamp_is_refused() -> None:
    with pytest.raises(ValueError, match="arrival_stamp 'on-accept' is not one of"):
        EmulatorConfig(secret_id=SECRET_ID, secret_key=SECRET_KEY, arrival_stamp="on-accept")


def test_latency_is_added_to_each_answer(emu: ImsEmulator) -> None:
    emu.config.latency = 0.3
    started = time.monotonic()
    assert answer(post(emu, image_params()))["Suggestion"] == "Pass"
    assert 0.3 <= time.monotonic() - started < 0.8


def test_client_giving_up_during_latency_counts_as_aborted(emu: ImsEmulator) -> None:
    emu.config.latency = 2.0
    with pytest.raises(httpx.ReadTimeout):
        post(emu, image_params(), timeout=0.2)
    wait_until(lambda: emu.stats.aborted == 1, timeout=1.0)
    assert emu.stats.billed == 1  # IMS bills a call its client abandoned


def test_serves_over_a_hundred_concurrent_keep_alive_connections(emu: ImsEmulator) -> None:
    # http.client on threads, not httpx.AsyncClient: httpcore's async pool spends O(requests x
    # connections) per event, which at this concurrency costs more than the emulator does.
    emu.config.latency = 0.3
    body = json.dumps(image_params(image=make_png(64, 64))).encode()
    headers = signed_headers(emu.port, body)
    connections = [http.client.HTTPConnection("127.0.0.1", emu.port, timeout=5) for _ in range(120)]

    def call(connection: http.client.HTTPConnection) -> int:
        connection.request("POST", "/", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status

    with ThreadPoolExecutor(max_workers=len(connections)) as pool:
        for _ in range(2):  # the second round reuses every connection
            started = time.monotonic()
            assert set(pool.map(call, connections)) == {200}
            # Served side by side: one after another would take 120 x 0.3 s = 36 s.
            assert time.monotonic() - started < 3.0
    for connection in connections:
        connection.close()
    assert emu.stats.billed == 240
    assert emu.stats.max_in_one_second >= 120


# --- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("model_call_failed", "ResourceUnavailable.ModelCallFailed"),
        ("internal_error", "InternalError"),
        ("UnauthorizedOperation.Unauthorized", "UnauthorizedOperation.Unauthorized"),
        ("ResourceUnavailable.ImageDownloadError", "ResourceUnavailable.ImageDownloadError"),
    ],
)
def test_error_faults_answer_their_code_and_are_billed(emu: ImsEmulator, fault: str, code: str) -> None:
    emu.config.faults = Faults(fail_next=[fault])
    assert error_code(post(emu, image_params())) == code
    assert emu.stats.billed == 1


def test_rate_limit_burst_fault_is_not_billed(emu: ImsEmulator) -> None:
    emu.config.faults = Faults(rate_limit_burst=1.0)
    response = post(emu, image_params())
    assert error_code(response) == "RequestLimitExceeded"
    assert "exceeds the frequency limit `100`" in answer(response)["Error"]["Message"]
    assert (emu.stats.billed, emu.stats.rate_limited) == (0, 1)


def test_http_5xx_fault_is_a_502_with_html(emu: ImsEmulator) -> None:
    emu.config.faults = Faults(http_5xx=1.0)
    response = post(emu, image_params())
    assert response.status_code == 502
    assert response.headers["content-type"] == "text/html"
    assert b"502 Bad Gateway" in response.content


def test_connection_reset_fault_is_a_transport_error(emu: ImsEmulator) -> None:
    emu.config.faults = Faults(connection_reset=1.0)
    with pytest.raises(httpx.TransportError):
        post(emu, image_params())


def test_malformed_json_fault_cannot_be_parsed(emu: ImsEmulator) -> None:
    emu.config.faults = Faults(malformed_json=1.0)
    response = post(emu, image_params())
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_hang_fault_never_answers_and_the_abandoned_call_is_counted(emu: ImsEmulator) -> None:
    emu.config.faults = Faults(hang=1.0)
    with pytest.raises(httpx.ReadTimeout):
        post(emu, image_params(), timeout=0.3)
    wait_until(lambda: emu.stats.aborted == 1, timeout=1.0)


def test_fail_next_scripts_exactly_the_next_calls(emu: ImsEmulator) -> None:
    emu.config.faults = Faults(fail_next=["model_call_failed", "model_call_failed"])
    with httpx.Client() as client:
        codes = [error_code(post(emu, image_params(), client=client)) for _ in range(3)]
    assert codes == ["ResourceUnavailable.ModelCallFailed"] * 2 + [None]
    assert emu.stats.faults_injected == {"model_call_failed": 2}


def test_seeded_faults_repeat_the_same_sequence(emu: ImsEmulator) -> None:
    def outcomes() -> list[str | None]:
        emu.config.faults = Faults(model_call_failed=0.3, internal_error=0.3, seed=42)
        with httpx.Client() as client:
            return [error_code(post(emu, image_params(), client=client)) for _ in range(12)]

    first = outcomes()
    assert first == outcomes()
    assert {None, "InternalError", "ResourceUnavailable.ModelCallFailed"} == set(first)


@pytest.mark.parametrize(
    "faults",
    [lambda: Faults(hang=1.5), lambda: Faults(fail_next=["no_such_fault"])],
    ids=["probability", "name"],
)
def test_faults_reject_bad_settings(faults: Callable[[], Faults]) -> None:
    with pytest.raises(ValueError, match=r"Faults\.hang|unknown fault"):
        faults()


# --- parameter and image validation -------------------------------------------------------------

_TINY = base64.b64encode(make_png(40, 40)).decode()
_VALIDATION_CASES: list[tuple[str, Json, str]] = [
    ("unknown-parameter", image_params(Foo=1), "UnknownParameter"),
    ("wrong-type", {"FileContent": 123}, "InvalidParameter"),
    ("bool-is-not-integer", image_params(Interval=True), "InvalidParameter"),
    ("no-image", {"DataId": "d1"}, "InvalidParameterValue.InvalidContent"),
    ("empty-image", {"FileContent": "", "FileUrl": ""}, "InvalidParameterValue.InvalidContent"),
    ("bad-base64", {"FileContent": "not base64!"}, "InvalidParameterValue.InvalidContent"),
    ("under-16-bytes", image_params(image=b"GIF89a tiny"), "InvalidParameter.ImageDataTooSmall"),
    (
        "not-an-image",
        image_params(image=b"plain text, not an image at all"),
        "InvalidParameter.InvalidImageContent",
    ),
    (
        "unsupported-format",
        image_params(image=b"P6\n64 64\n255\n" + bytes(64 * 64 * 3)),
        "InvalidParameter.InvalidImageContent",
    ),
    ("too-small", {"FileContent": _TINY}, "InvalidParameter.ImageSizeTooSmall"),
    ("too-thin", image_params(image=make_png(4600, 51)), "InvalidParameter.ImageAspectRatioTooLarge"),
    ("data-id-chars", image_params(DataId="has space"), "InvalidParameterValue.InvalidDataId"),
    ("data-id-length", image_params(DataId="x" * 65), "InvalidParameterValue.InvalidDataId"),
    ("biz-type", image_params(BizType="ab"), "InvalidParameterValue"),
    ("type", image_params(Type="VIDEO"), "InvalidParameterValue"),
    ("negative-interval", image_params(Interval=-1), "InvalidParameterValue"),
    ("user-not-object", image_params(User="alice"), "InvalidParameter"),
    ("user-unknown-field", image_params(User={"Name": "alice"}), "UnknownParameter"),
    ("user-field-type", image_params(User={"Gender": "1"}), "InvalidParameter"),
    ("user-gender-range", image_params(User={"Gender": 3}), "InvalidParameterValue"),
    ("user-account-type", image_params(User={"AccountType": "9"}), "InvalidParameterValue"),
    ("device-ip-type", image_params(Device={"IpType": 2}), "InvalidParameterValue"),
]


@pytest.mark.parametrize(
    ("params", "code"), [case[1:] for case in _VALIDATION_CASES], ids=[case[0] for case in _VALIDATION_CASES]
)
def test_invalid_parameters_get_the_ims_code(emu: ImsEmulator, params: Json, code: str) -> None:
    assert error_code(post(emu, params)) == code
    assert emu.stats.billed == 0


@pytest.mark.parametrize("body", [b"{not json", b'["FileContent"]'], ids=["not-json", "not-an-object"])
def test_body_must_be_a_json_object(emu: ImsEmulator, body: bytes) -> None:
    response = httpx.post(emu.url, content=body, headers=signed_headers(emu.port, body))
    assert error_code(response) == "InvalidParameter"


def test_file_content_of_10_mib_is_invalid_file_content_size() -> None:
    # Unreachable over HTTP, where the 10 MiB body limit answers first; the rule still stands alone.
    config = EmulatorConfig(secret_id=SECRET_ID, secret_key=SECRET_KEY)
    with pytest.raises(ImsError) as raised:
        validate({"FileContent": "A" * MAX_FILE_CONTENT_CHARS}, config)
    assert raised.value.code == "InvalidParameterValue.InvalidFileContentSize"


def test_full_user_and_device_are_accepted(emu: ImsEmulator) -> None:
    user = {
        "UserId": "u1",
        "Nickname": "n",
        "AccountType": "7",
        "Gender": 2,
        "Age": 30,
        "Level": 1,
        "Desc": "d",
    }
    device = {"Ip": "10.0.0.1", "IpType": 0, "Mac": "00:11:22:33:44:55", "IMEI": "123456789012345"}
    params = image_params(User=user, Device=device, Type="IMAGE", BizTag="t", Interval=1, MaxFrames=5)
    assert error_code(post(emu, params)) is None


# --- results ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        make_png(marker="IMSEMU:Review:Terror:Knife:93", embed="append"),
        make_jpeg(marker="IMSEMU:Review:Terror:Knife:93"),
        make_jpeg(marker="IMSEMU:Review:Terror:Knife:93", embed="append"),
        make_gif(frames=4, marker="IMSEMU:Review:Terror:Knife:93"),
    ],
    ids=["png-appended", "jpeg-comment", "jpeg-appended", "animated-gif"],
)
def test_marker_is_found_in_every_format(emu: ImsEmulator, image: bytes) -> None:
    result = answer(post(emu, image_params(image=image)))
    assert (result["Suggestion"], result["Label"], result["SubLabel"], result["Score"]) == (
        "Review",
        "Terror",
        "Knife",
        93,
    )
    terror = next(scene for scene in result["LabelResults"] if scene["Scene"] == "Terror")
    assert terror["Suggestion"] == "Review"
    assert {"Id": 0, "Name": "Knife", "Score": 93} in terror["Details"]


def test_pass_result_has_every_structure_with_normal_scenes(emu: ImsEmulator) -> None:
    image = make_png()
    result = answer(post(emu, image_params(image=image, DataId="d-1")))
    assert result["FileMD5"] == hashlib.md5(image).hexdigest()
    assert (result["DataId"], result["BizType"], json.loads(result["Extra"])) == (
        "d-1",
        "TencentCloudDefault",
        {},
    )
    assert [scene["Scene"] for scene in result["LabelResults"]] == [
        "Porn",
        "Sexy",
        "Terror",
        "Illegal",
        "Teenager",
    ]
    assert all(scene["Suggestion"] == "Pass" and scene["Details"] for scene in result["LabelResults"])
    assert [scene["Scene"] for scene in result["ObjectResults"]] == [
        "PolityFace",
        "AppLogo",
        "MapRecognition",
    ]
    assert result["OcrResults"][0]["Scene"] == "OCR"
    assert result["LibResults"][0]["Scene"] == "Similar"
    assert result["RecognitionResults"] == [{"Label": "Scene", "Tags": []}]
    assert (result["Reason"], result["StoreUrl"]) == ("", "")


def test_markers_fill_every_nested_structure(emu: ImsEmulator) -> None:
    markers = " ".join(
        [
            "IMSEMU:Block:Ad:QrCode:99",
            "IMSEMU:Review:Abuse:Insult:80",
            format_marker("Block", "Porn", "", 100, source="lib"),
            "IMSEMU:Review:Polity:PolityFace:70",
        ]
    )
    result = answer(post(emu, image_params(markers, BizType="my_policy")))

    assert (result["Suggestion"], result["Label"], result["Score"], result["BizType"]) == (
        "Block",
        "Porn",
        100,
        "my_policy",
    )
    qr = next(scene for scene in result["ObjectResults"] if scene["Scene"] == "QrCode")
    assert (qr["Suggestion"], qr["Names"]) == ("Block", ["QRCODE"])
    assert qr["Details"][0]["Value"].startswith("https://qr.example/")
    assert set(qr["Details"][0]["Location"]) == {"X", "Y", "Width", "Height", "Rotate"}
    assert json.loads(result["Extra"])["QRcodeInfo"][0]["Url"] == qr["Details"][0]["Value"]
    face = next(scene for scene in result["ObjectResults"] if scene["Scene"] == "PolityFace")
    assert face["Details"][0]["ObjectId"].startswith("face-")

    ocr = result["OcrResults"][0]
    detail = ocr["Details"][0]
    hit = detail["HitInfos"][0]
    assert (ocr["Label"], detail["Keywords"], detail["LibId"], detail["Rate"]) == (
        "Abuse",
        ["idiot"],
        "emu-abuse-words",
        99,
    )
    position = hit["Positions"][0]
    assert detail["Text"][position["Start"] : position["End"]] == hit["Keyword"] == "idiot"

    library = result["LibResults"][0]
    assert (library["Suggestion"], library["Label"], library["Details"][0]["Score"]) == ("Block", "Porn", 100)
    assert [tag["Name"] for tag in result["RecognitionResults"][0]["Tags"]] == [
        "QrCode",
        "Insult",
        "Porn",
        "PolityFace",
    ]
    assert result["Reason"]


def test_same_image_gets_the_same_answer(emu: ImsEmulator) -> None:
    params = image_params("IMSEMU:Review:Sexy:SexyDress:61")
    first, second = answer(post(emu, params)), answer(post(emu, params))
    assert first.pop("RequestId") != second.pop("RequestId")
    assert first == second


def test_magenta_ink_reads_as_ad_text_where_it_is_only_when_asked(emu: ImsEmulator) -> None:
    image = Image.new("RGB", (400, 300), "white")
    ImageDraw.Draw(image).rectangle((80, 160, 239, 199), fill=(255, 0, 255))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    params = image_params(image=buffer.getvalue())
    assert answer(post(emu, params))["Suggestion"] == "Pass"
    emu.config.read_ink = True
    result = answer(post(emu, params))
    assert (result["Suggestion"], result["Label"]) == ("Block", "Ad")
    location = result["OcrResults"][0]["Details"][0]["Location"]
    # JPEGs are read at 1/8 of their size: within 8 px.
    assert [location["X"], location["Y"], location["Width"], location["Height"]] == pytest.approx(
        [80, 160, 160, 40], abs=8
    )


def test_malformed_marker_is_reported(emu: ImsEmulator) -> None:
    result = answer(post(emu, image_params("IMSEMU:Blok:Porn:SexBehavior:97")))
    assert result["Error"]["Code"] == "InternalError"
    assert "Suggestion must be one of" in result["Error"]["Message"]


# --- FileUrl ------------------------------------------------------------------------------------


@pytest.fixture
def image_host() -> Iterator[tuple[str, Counter[str]]]:
    """A loopback web server with a few images; yields its base URL and the hits per path."""
    block = make_jpeg(marker="IMSEMU:Block:Illegal:Gamble:90")
    # A valid JPEG with trailing bytes: one byte over IMS's 5 MB for an image by URL.
    big = block + b"\0" * (MAX_URL_IMAGE_BYTES + 1 - len(block))
    files = {"/block.jpg": block, "/empty.png": b"", "/big.jpg": big}
    hits: Counter[str] = Counter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits[self.path] += 1
            if self.path == "/slow.png":
                time.sleep(0.5)
            if self.path == "/redirect.png":
                self.send_response(302)
                self.send_header("Location", "/block.jpg")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = files.get(self.path)
            self.send_response(200 if data is not None else 404)
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_file_url_is_downloaded_and_moderated(emu: ImsEmulator, image_host: tuple[str, Counter[str]]) -> None:
    base_url, _ = image_host
    result = answer(post(emu, {"FileUrl": f"{base_url}/block.jpg"}))
    assert (result["Suggestion"], result["Label"], result["SubLabel"]) == ("Block", "Illegal", "Gamble")


@pytest.mark.parametrize(
    ("path", "attempts", "code"),
    [
        ("/missing.png", 2, "ResourceUnavailable.ImageDownloadError"),
        ("/slow.png", 2, "ResourceUnavailable.ImageDownloadError"),
        ("/redirect.png", 2, "ResourceUnavailable.ImageDownloadError"),
        ("/empty.png", 1, "InvalidParameterValue.EmptyImageContent"),
        ("/big.jpg", 1, "InvalidParameterValue.InvalidFileContentSize"),
    ],
)
def test_file_url_failures(
    emu: ImsEmulator, image_host: tuple[str, Counter[str]], path: str, attempts: int, code: str
) -> None:
    base_url, hits = image_host
    emu.config.url_fetch_timeout = 0.2
    assert error_code(post(emu, {"FileUrl": base_url + path})) == code
    assert hits[path] == attempts
    assert hits["/block.jpg"] == 0  # redirects are not followed


@pytest.mark.parametrize("url", ["http://203.0.113.7/a.png", "ftp://127.0.0.1/a.png", "http:///a.png"])
def test_file_url_outside_loopback_or_http_is_not_fetched(emu: ImsEmulator, url: str) -> None:
    assert error_code(post(emu, {"FileUrl": url})) == "ResourceUnavailable.ImageDownloadError"


# --- stats and lifecycle ------------------------------------------------------------------------


def test_stats_record_requests_and_reset(emu: ImsEmulator) -> None:
    post(emu, image_params(DataId="first"))
    post(emu, image_params(), overrides={"Action": ""})
    assert (emu.stats.requests, emu.stats.billed) == (2, 1)
    assert emu.stats.errors_by_code == {"MissingParameter": 1}
    assert [params.get("DataId") for _, params in emu.stats.received] == ["first", None]

    emu.reset_stats()
    assert (emu.stats.requests, emu.stats.billed, emu.stats.received, emu.stats.errors_by_code) == (
        0,
        0,
        [],
        {},
    )


def test_stop_closes_idle_keep_alive_connections_and_is_idempotent() -> None:
    emulator = ImsEmulator(EmulatorConfig(secret_id=SECRET_ID, secret_key=SECRET_KEY))
    with pytest.raises(RuntimeError):
        _ = emulator.url
    with emulator, httpx.Client() as client:
        assert error_code(post(emulator, image_params(), client=client)) is None
        started = time.monotonic()
        emulator.stop()
        assert time.monotonic() - started < 1.0
        with pytest.raises(httpx.TransportError):
            post(emulator, image_params(), client=client)
    emulator.stop()


def test_standalone_process_serves_and_exits_on_sigterm() -> None:
    env = {**os.environ, "IMS_EMULATOR_SECRET_ID": SECRET_ID, "IMS_EMULATOR_SECRET_KEY": SECRET_KEY}
    process = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--port", "0", "--qps", "10"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("ims-emulator listening on http://127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        body = json.dumps(image_params("IMSEMU:Block:Porn:SexBehavior:97")).encode()
        response = httpx.post(f"http://127.0.0.1:{port}", content=body, headers=signed_headers(port, body))
        assert answer(response)["Suggestion"] == "Block"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0
    assert SECRET_KEY not in stderr
    assert SECRET_ID not in stderr
