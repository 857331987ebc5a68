"""The gateway end to end: real gRPC clients over real sockets, the IMS emulator over real HTTP."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator

import grpc
import pytest
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import (
    Device,
    Gender,
    ModerateImageRequest,
    ModerationType,
    Suggestion,
    User,
)

from backends.image_limits import MAX_IMAGE_BYTES
from emulator import Faults, ImsEmulator
from emulator.images import make_png
from testbed.fileserver import serve_files
from tests.support.eventually import eventually
from tests.support.gateway import SECRET_ID, SECRET_KEY, GatewayFactory, open_channel
from tests.support.richstatus import rich_error

Stub = moderation_service_pb2_grpc.ModerationServiceStub
PASS_IMAGE = make_png(256, 256)
BLOCK_IMAGE = make_png(256, 256, marker="IMSEMU:Block:Porn:SexBehavior:97")


async def failure(
    stub: Stub, request: ModerateImageRequest, timeout: float | None = None
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ModerateImage(request, timeout=timeout)
    return caught.value


async def test_pass_from_bytes(stub: Stub, emulator: ImsEmulator) -> None:
    result = await stub.ModerateImage(ModerateImageRequest(content=PASS_IMAGE, data_id="img-1"))
    assert result.suggestion == Suggestion.SUGGESTION_PASS
    assert result.label == "Normal"
    assert (result.backend, result.attempts) == ("tencent", 1)
    assert result.request_id
    assert result.data_id == "img-1"
    assert result.file_md5 == hashlib.md5(PASS_IMAGE).hexdigest()
    assert result.label_results
    assert emulator.stats.billed == 1


async def test_every_request_field_reaches_ims(stub: Stub, emulator: ImsEmulator) -> None:
    request = ModerateImageRequest(
        content=PASS_IMAGE,
        biz_type="my_policy",
        data_id="d-1",
        interval=2,
        max_frames=10,
        user=User(user_id="u-1", gender=Gender.GENDER_MALE, age=20),
        device=Device(ip="203.0.113.9"),
        type=ModerationType.MODERATION_TYPE_IMAGE,
        biz_tag="scene_a",
    )
    result = await stub.ModerateImage(request)
    assert result.biz_type == "my_policy"
    _, params = emulator.stats.received[-1]
    assert params["User"] == {"UserId": "u-1", "Gender": 1, "Age": 20}
    assert params["Device"] == {"Ip": "203.0.113.9", "IpType": 0}
    assert (params["Interval"], params["MaxFrames"], params["Type"], params["BizTag"]) == (
        2,
        10,
        "IMAGE",
        "scene_a",
    )


async def test_block_fills_every_result_structure(stub: Stub) -> None:
    result = await stub.ModerateImage(ModerateImageRequest(content=BLOCK_IMAGE))
    assert (result.suggestion, result.label, result.sub_label, result.score) == (
        Suggestion.SUGGESTION_BLOCK,
        "Porn",
        "SexBehavior",
        97,
    )
    porn = next(r for r in result.label_results if r.scene == "Porn")
    assert porn.suggestion == Suggestion.SUGGESTION_BLOCK
    assert porn.details
    for structure in (
        result.object_results,
        result.ocr_results,
        result.lib_results,
        result.recognition_results,
    ):
        assert structure


async def test_review_with_objects_and_text(stub: Stub) -> None:
    qr = await stub.ModerateImage(
        ModerateImageRequest(content=make_png(300, 300, marker="IMSEMU:Block:Ad:QrCode:99"))
    )
    detail = next(r for r in qr.object_results if r.scene == "QrCode").details[0]
    assert detail.value
    assert detail.location.width > 0


@pytest.fixture
def image_server() -> Iterator[str]:
    """A loopback HTTP server holding one image, for URL requests."""
    with serve_files({"/block.png": BLOCK_IMAGE}) as url:
        yield url


async def test_url_input(stub: Stub, image_server: str) -> None:
    result = await stub.ModerateImage(ModerateImageRequest(url=f"{image_server}/block.png"))
    assert result.suggestion == Suggestion.SUGGESTION_BLOCK


async def test_url_the_backend_cannot_fetch(stub: Stub, image_server: str) -> None:
    error = rich_error(await failure(stub, ModerateImageRequest(url=f"{image_server}/missing.png")))
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.info.reason == "IMAGE_DOWNLOAD_FAILED"
    assert error.info.metadata["upstream_code"] == "ResourceUnavailable.ImageDownloadError"


async def test_invalid_requests_spend_no_quota(stub: Stub, emulator: ImsEmulator) -> None:
    error = rich_error(
        await failure(stub, ModerateImageRequest(content=make_png(40, 300), data_id="bad id!"))
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.info.reason == "IMAGE_DIMENSIONS_OUT_OF_RANGE"
    assert error.info.domain == "moderation-gateway"
    assert error.bad_request is not None
    assert [v.field for v in error.bad_request.field_violations] == ["content", "data_id"]
    assert emulator.stats.requests == 0


async def test_largest_image_fits_and_one_byte_more_is_a_clear_error(
    stub: Stub, emulator: ImsEmulator
) -> None:
    largest = PASS_IMAGE + b"\0" * (MAX_IMAGE_BYTES - len(PASS_IMAGE))
    result = await stub.ModerateImage(ModerateImageRequest(content=largest))
    assert result.suggestion == Suggestion.SUGGESTION_PASS
    error = rich_error(await failure(stub, ModerateImageRequest(content=largest + b"\0")))
    assert (error.code, error.info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "IMAGE_TOO_LARGE")
    assert emulator.stats.billed == 1


@pytest.mark.parametrize(
    ("upstream", "code", "reason"),
    [
        (
            "UnauthorizedOperation.Unauthorized",
            grpc.StatusCode.FAILED_PRECONDITION,
            "BACKEND_ACCOUNT_UNAVAILABLE",
        ),
        ("LimitExceeded", grpc.StatusCode.RESOURCE_EXHAUSTED, "BACKEND_QUOTA_EXHAUSTED"),
        (
            "InvalidParameter.InvalidImageContent",
            grpc.StatusCode.INVALID_ARGUMENT,
            "BACKEND_REJECTED_REQUEST",
        ),
        ("InvalidParameterValue.InvalidDataId", grpc.StatusCode.INVALID_ARGUMENT, "BACKEND_REJECTED_REQUEST"),
        ("UnsupportedRegion", grpc.StatusCode.INTERNAL, "BACKEND_MISCONFIGURED"),
        ("FailedOperation", grpc.StatusCode.INTERNAL, "BACKEND_FAILED"),
    ],
)
async def test_permanent_errors_map_to_codes_and_are_not_retried(
    stub: Stub, emulator: ImsEmulator, upstream: str, code: grpc.StatusCode, reason: str
) -> None:
    emulator.config.faults = Faults(fail_next=[upstream])
    error = rich_error(await failure(stub, ModerateImageRequest(content=PASS_IMAGE)))
    assert (error.code, error.info.reason) == (code, reason)
    assert error.info.metadata["upstream_code"] == upstream
    assert error.info.metadata["upstream_request_id"]
    assert error.info.metadata["attempts"] == "1"
    assert emulator.stats.billed == 1
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert error.bad_request is not None
        assert error.bad_request.field_violations[0].field in {"image", "data_id"}
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        assert error.quota_failure is not None


@pytest.mark.parametrize(
    "fault",
    [
        "model_call_failed",
        "internal_error",
        "http_5xx",
        "connection_reset",
        "malformed_json",
        "rate_limit_burst",
    ],
)
async def test_transient_faults_are_retried(stub: Stub, emulator: ImsEmulator, fault: str) -> None:
    emulator.config.faults = Faults(fail_next=[fault])
    result = await stub.ModerateImage(ModerateImageRequest(content=PASS_IMAGE))
    assert result.suggestion == Suggestion.SUGGESTION_PASS
    assert result.attempts == 2


@pytest.mark.parametrize(
    ("fault", "code", "reason"),
    [
        ("model_call_failed", grpc.StatusCode.UNAVAILABLE, "BACKEND_UNAVAILABLE"),
        ("rate_limit_burst", grpc.StatusCode.RESOURCE_EXHAUSTED, "BACKEND_RATE_LIMITED"),
    ],
)
async def test_retries_stop_at_the_attempt_limit(
    stub: Stub, emulator: ImsEmulator, fault: str, code: grpc.StatusCode, reason: str
) -> None:
    emulator.config.faults = Faults(fail_next=[fault] * 5)
    error = rich_error(await failure(stub, ModerateImageRequest(content=PASS_IMAGE)))
    assert (error.code, error.info.reason, error.info.metadata["attempts"]) == (code, reason, "3")
    assert error.retry_info is not None
    assert emulator.stats.requests == 3


async def test_caller_deadline_beats_slow_backend(stub: Stub, emulator: ImsEmulator) -> None:
    emulator.config.latency = 2.0
    loop = asyncio.get_running_loop()
    started = loop.time()
    error = await failure(stub, ModerateImageRequest(content=PASS_IMAGE), timeout=0.3)
    elapsed = loop.time() - started
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 0.4
    # The abandoned backend request was dropped, not left running.
    await eventually(lambda: emulator.stats.aborted, within=2.5)
    assert emulator.stats.aborted == 1


async def test_backend_timeout_caps_calls_without_a_deadline(
    make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    # The production cap is 15 s (MODERATION_BACKEND_TIMEOUT may only lower it); 1 s keeps the test quick.
    gateway = await make_gateway(backend_timeout=1.0)
    emulator.config.faults = Faults(fail_next=["hang"])
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with open_channel(gateway) as channel:
        error = rich_error(await failure(Stub(channel), ModerateImageRequest(content=PASS_IMAGE)))
    assert 0.9 < loop.time() - started < 2.5
    assert (error.code, error.info.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "BACKEND_TIMEOUT")
    assert "backend timeout" in error.message


async def test_wrong_gateway_keys_are_not_the_callers_authentication_failure(
    stub: Stub, emulator: ImsEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.config.secret_key = "a-different-key-than-the-gateway-has"
    caplog.set_level("DEBUG")
    error = rich_error(await failure(stub, ModerateImageRequest(content=PASS_IMAGE)))
    assert error.code == grpc.StatusCode.INTERNAL
    assert error.info.reason == "BACKEND_MISCONFIGURED"
    assert error.info.metadata["upstream_code"] == "AuthFailure.SignatureFailure"
    assert error.info.metadata["attempts"] == "1"
    assert SECRET_ID not in error.message
    assert "AuthFailure.SignatureFailure" in caplog.text


async def test_no_secret_in_logs_or_errors(
    stub: Stub, emulator: ImsEmulator, image_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    seen: list[str] = []
    requests = [
        ModerateImageRequest(content=PASS_IMAGE),
        ModerateImageRequest(content=b"not an image, but long enough"),
        ModerateImageRequest(url=f"{image_server}/missing.png"),
    ]
    for faults in (
        ["model_call_failed"] * 3,
        ["UnauthorizedOperation.Unauthorized"],
        ["connection_reset"] * 3,
    ):
        emulator.config.faults = Faults(fail_next=list(faults))
        requests_this_round = requests if faults[0] == "model_call_failed" else requests[:1]
        for request in requests_this_round:
            try:
                seen.append(str(await stub.ModerateImage(request)))
            except grpc.aio.AioRpcError as error:
                seen.append(f"{error.details()} {error.trailing_metadata()} {error.debug_error_string()}")
    emulator.config.secret_key = "wrong"
    seen.append(str(await failure(stub, ModerateImageRequest(content=PASS_IMAGE))))
    everything = "\n".join(seen) + caplog.text
    for secret in (SECRET_ID, SECRET_KEY):
        assert secret not in everything
