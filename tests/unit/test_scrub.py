"""The scrubber, the bounded tokens and the status size limits: what leaves the gateway is bounded."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from moderation.v1.moderation_service_pb2 import Device, ModerateImageRequest, User

from backends.errors import BackendError, Kind
from backends.image_limits import IMS_IMAGE_LIMITS
from backends.tencent.codes import UPSTREAM_CODE
from common.hostnames import host_name_problem
from common.scrub import LABEL, REDACTED, UNRECOGNISED, Scrubber, bounded_token, excerpt
from service.errors import CallFailure, failure_status
from service.validation import ValidationError, validate

SECRET_ID = "AKIDunitTestKeyId0123456789"
SECRET_KEY = "unit-test-secret-key-value"
# grpc's soft limit on a call's metadata; the status message and details travel in it.
METADATA_SOFT_LIMIT = 8 * 1024


@pytest.fixture
def secrets_configured() -> Scrubber:
    """The gateway's outward scrubber, holding the configured secrets."""
    return Scrubber([SECRET_ID, SECRET_KEY])


def test_the_scrubber_removes_every_secret_longest_first() -> None:
    scrubber = Scrubber(["abc", "abcdef", ""])
    assert scrubber("x abcdef y abc") == f"x {REDACTED} y {REDACTED}"
    assert not scrubber.holds_secret(scrubber("abcdefabc"))
    assert repr(scrubber) == "Scrubber(2 secrets)"


def test_an_excerpt_is_short_printable_ascii_and_says_it_was_cut() -> None:
    assert excerpt("plain") == "plain"
    assert excerpt("a\nb\x00c") == "a\\x0ab\\x00c"
    assert excerpt("münchen") == "m\\xfcnchen"
    cut = excerpt("x" * 5000, 64)
    assert len(cut) <= 64
    assert cut.endswith("(5000 chars)")


@pytest.mark.parametrize(
    ("code", "kept"),
    [
        ("InvalidParameterValue.InvalidDataId", True),
        ("RequestLimitExceeded.GlobalRegionUinLimitExceeded", True),
        ("HTTP502", True),
        ("MalformedResponse", True),
        ("", True),
        ("TC3-HMAC-SHA256 Credential=AKID/2024", False),
        ("lowercase", False),
        ("Trailing.", False),
        ("A" * 65, False),
        ("Code\nInjected", False),
        ("A.B.C.D.E", False),
    ],
)
def test_the_tencent_type_holds_codes_to_the_ims_grammar(code: str, kept: bool) -> None:
    assert bounded_token(code, UPSTREAM_CODE) == (code if kept else UNRECOGNISED)


@pytest.mark.parametrize(
    ("code", "kept"),
    [
        ("InvalidParameterValue.InvalidDataId", True),
        ("throttled", True),
        ("quota-exceeded.v2", True),
        ("588", True),
        ("", True),
        ("TC3-HMAC-SHA256 Credential=AKID/2024", False),
        ("A" * 65, False),
        ("Code\nInjected", False),
        ("400 Bad Request", False),
    ],
)
def test_every_backend_error_holds_its_code_to_the_bound_of_any_vendor(code: str, kept: bool) -> None:
    error = BackendError(Kind.FAILED, "refused", upstream_code=code)
    assert error.upstream_code == (code if kept else UNRECOGNISED)


def test_a_grammatical_token_holding_a_secret_is_unrecognised() -> None:
    scrubber = Scrubber([SECRET_ID])
    assert scrubber.token(f"FailedOperation.{SECRET_ID}", UPSTREAM_CODE) == UNRECOGNISED
    assert scrubber.token(SECRET_ID, LABEL) == UNRECOGNISED
    assert scrubber.token("Porn", LABEL) == "Porn"


def test_request_ids_are_bounded() -> None:
    error = BackendError(Kind.FAILED, "refused", request_id="TC3-HMAC-SHA256 Credential=x")
    assert error.request_id == UNRECOGNISED
    uuid = "3f1c6a62-1e8b-4f4e-8a55-0a0a7f5f9d11"
    assert BackendError(Kind.FAILED, "refused", request_id=uuid).request_id == uuid


@pytest.mark.parametrize(
    "host", ["xn--a", "a..b", "a" * 64 + ".com", ".leading", ("a" * 60 + ".") * 5 + "com", "xn--zz"]
)
def test_hosts_the_http_client_or_resolver_would_reject(host: str) -> None:
    problem = host_name_problem(host)
    assert problem is not None
    assert host not in problem


@pytest.mark.parametrize(
    "host",
    ["example.com", "example.com.", "a" * 63 + ".com", "münchen.de", "xn--mnchen-3ya.de", "a_b.test", "::1"],
)
def test_hosts_any_client_can_reach(host: str) -> None:
    assert host_name_problem(host) is None


def _wire_size(status: object) -> int:
    """What the status costs in metadata: its message percent-encoded, its details base64-encoded."""
    assert isinstance(status, status_pb2.Status)
    details = status_pb2.Status(details=status.details).SerializeToString()
    return 3 * len(status.message) + (len(details) * 4 + 2) // 3


def test_the_worst_validation_failure_fits_well_under_the_metadata_limit(
    secrets_configured: Scrubber,
) -> None:
    huge = f"{SECRET_KEY}%" * 400
    request = ModerateImageRequest(
        url="http://" + "a" * 4000 + "/" + huge,
        data_id=huge,
        biz_type=huge,
        interval=-1,
        max_frames=-1,
        biz_tag=huge,
        user=User(desc="d" * 6000, head_url="ftp://" + huge),
        device=Device(ip=huge, imei=huge),
    )
    with pytest.raises(ValidationError) as caught:
        validate(request, IMS_IMAGE_LIMITS)
    status = failure_status(caught.value, secrets_configured)
    assert len(caught.value.violations) >= 7
    assert _wire_size(status) < METADATA_SOFT_LIMIT // 2
    assert SECRET_KEY not in str(status)


@pytest.mark.parametrize("kind", list(Kind))
def test_the_worst_backend_failure_fits_well_under_the_metadata_limit(
    secrets_configured: Scrubber, kind: Kind
) -> None:
    # A message quoting a 4 KB URL in multi-byte characters, a 64-character code and request id.
    message = "could not download http://" + "ü%" * 2000 + SECRET_ID
    error = BackendError(
        kind, message, upstream_code="A" * 64, request_id="r" * 64, field="url" * 40, retry_after=1.5
    )
    status = failure_status(CallFailure(error, backend="b" * 200, attempts=3), secrets_configured)
    assert _wire_size(status) < METADATA_SOFT_LIMIT // 2
    assert SECRET_ID not in str(status)
    assert status.message.isascii()


def test_the_status_keeps_its_error_info_and_names_no_secret(secrets_configured: Scrubber) -> None:
    error = BackendError(
        Kind.INVALID_REQUEST, f"echoed {SECRET_ID} and {SECRET_KEY}", upstream_code="InvalidParameter"
    )
    status = failure_status(CallFailure(error, backend="tencent", attempts=1), secrets_configured)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.metadata["upstream_code"] == "InvalidParameter"
    assert SECRET_ID not in str(status)
    assert SECRET_KEY not in str(status)
    assert REDACTED in status.message
