"""Property-based fuzzing: whatever arrives, every failure is a mapped, documented error.

Thousands of cases a run: request messages through validation (and a sample through the real server),
raw bytes, valid or not, on every method of the real server,
the IMS response parser over random, truncated and mistyped JSON, and the image header reader over
truncated and corrupted files of every accepted format.
"""

from __future__ import annotations

import io
import json
from typing import Any

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import Device, ModerateImageRequest, Suggestion, User
from PIL import Image

from backends.errors import BackendError
from backends.image_limits import IMS_IMAGE_LIMITS
from backends.tencent.wire import parse_response, request_body
from service.server import Gateway
from service.validation import ValidationError, image_size, validate
from tests.support.gateway import open_channel
from tests.support.raw_calls import EVERY_METHOD, UNDECODABLE, call_raw

# Each run draws new examples: 500 a run keeps the suite quick and still covers the parsers over time.
MANY = settings(max_examples=500, deadline=None)
# Statuses the gateway documents for a request; UNKNOWN and INTERNAL would mean an unmapped failure.
DOCUMENTED_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}

text = st.text(max_size=80)
requests = st.builds(
    ModerateImageRequest,
    content=st.one_of(st.none(), st.binary(max_size=512)),
    url=st.one_of(
        st.none(), text, st.from_regex(r"https?://[a-z0-9.\-\[\]:@%]{0,30}/[ -~]{0,30}", fullmatch=True)
    ),
    biz_type=text,
    data_id=text,
    interval=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    max_frames=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    user=st.one_of(st.none(), st.builds(User, desc=st.text(max_size=6000), head_url=text, phone=text)),
    device=st.one_of(st.none(), st.builds(Device, ip=text, imei=text, mac=text)),
    biz_tag=text,
)


def _image(image_format: str) -> bytes:
    buffer = io.BytesIO()
    mode = "P" if image_format == "GIF" else "RGB"
    Image.new(mode, (120, 90)).save(buffer, format=image_format)
    return buffer.getvalue()


SAMPLES = [_image(f) for f in ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "ICO")]


@MANY
@given(requests)
def test_validation_accepts_or_explains(request: ModerateImageRequest) -> None:
    violations = []
    try:
        validate(request, IMS_IMAGE_LIMITS)
    except ValidationError as error:
        violations = error.violations
    if violations:
        assert all(v.field and v.description and v.reason.isupper() for v in violations)
    else:
        # What validation lets through can always be put on the wire.
        json.loads(bytes(request_body(request)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests)
async def test_the_server_never_answers_unknown(gateway: Gateway, request: ModerateImageRequest) -> None:
    code = grpc.StatusCode.OK
    async with open_channel(gateway) as channel:
        try:
            await moderation_service_pb2_grpc.ModerationServiceStub(channel).ModerateImage(
                request, timeout=10
            )
        except grpc.aio.AioRpcError as error:
            code = error.code()
    assert code is grpc.StatusCode.OK or code in DOCUMENTED_CODES, code


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)
ims_keys = st.sampled_from(
    [
        "Suggestion",
        "Label",
        "SubLabel",
        "Score",
        "LabelResults",
        "ObjectResults",
        "OcrResults",
        "LibResults",
        "RecognitionResults",
        "Details",
        "Location",
        "X",
        "Positions",
        "HitInfos",
        "Error",
        "Code",
        "RequestId",
        "FileMD5",
        "Extra",
        "Keywords",
        "Names",
    ]
)
ims_like = st.recursive(
    st.none()
    | st.integers(-5, 200)
    | st.sampled_from(["Pass", "Review", "Block", "pass", "", "Normal"])
    | st.floats(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(ims_keys, children, max_size=6),
    max_leaves=30,
)


def _check_parse(body: bytes) -> None:
    # Anything but a BackendError escaping here fails the test.
    try:
        result = parse_response(body)
    except BackendError as error:
        message = error.message
    else:
        message = ""
        # A result always carries a verdict: a response without one is an error, never a PASS.
        assert result.suggestion != Suggestion.SUGGESTION_UNSPECIFIED
    if message:
        # Errors callers may see say what happened, in a bounded message.
        assert len(message) < 2000


@MANY
@given(
    st.one_of(
        json_values, st.builds(lambda r: {"Response": r}, st.dictionaries(ims_keys, ims_like, max_size=8))
    )
)
def test_parser_never_crashes_on_any_json(document: Any) -> None:
    _check_parse(json.dumps(document).encode())


@MANY
@given(st.binary(max_size=300) | st.builds(lambda s: s.encode(), st.text(max_size=300)))
def test_parser_never_crashes_on_any_bytes(body: bytes) -> None:
    _check_parse(body)


@MANY
@given(st.dictionaries(ims_keys, ims_like, max_size=8), st.integers(min_value=0, max_value=400))
def test_parser_never_crashes_on_truncated_envelopes(response: dict[str, Any], cut: int) -> None:
    _check_parse(json.dumps({"Response": {**response, "Suggestion": "Pass"}}).encode()[:cut])


@MANY
@given(
    st.sampled_from(SAMPLES),
    st.integers(min_value=0, max_value=2000),
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=2000), st.integers(min_value=0, max_value=255)),
        max_size=8,
    ),
)
def test_header_reader_on_truncated_and_corrupted_images(
    sample: bytes, cut: int, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(sample[: max(cut, 1)])
    for position, value in flips:
        if position < len(data):
            data[position] = value
    # Anything but a ValueError escaping here fails the test.
    try:
        size, refusal = image_size(bytes(data)), ""
    except ValueError as error:
        size, refusal = (1, 1), str(error)
        assert refusal, "every refusal explains itself"
    assert min(size) > 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(EVERY_METHOD),
    messages=st.lists(
        st.binary(max_size=64) | st.sampled_from([UNDECODABLE, b"\x0a\x05ab", b"\x08\x96\x01", b"\xff"]),
        min_size=1,
        max_size=3,
    ),
)
async def test_raw_bytes_on_every_method_never_get_unknown(
    gateway: Gateway, method: str, messages: list[bytes]
) -> None:
    code = grpc.StatusCode.OK
    async with open_channel(gateway) as channel:
        try:
            # Short: a Watch whose bytes happen to parse streams until its deadline.
            await call_raw(channel, method, messages, timeout=1)
        except grpc.aio.AioRpcError as error:
            code = error.code()
    # NOT_FOUND: a health check of a service name the random bytes spelled.
    assert code is grpc.StatusCode.OK or code in {*DOCUMENTED_CODES, grpc.StatusCode.NOT_FOUND}, code
