"""Every documented IMS error code has an explicit kind, and only transient ones are retried."""

from __future__ import annotations

import pytest

from backends.errors import Kind
from backends.tencent.codes import ERROR_KINDS, kind_of
from service.errors import KIND_POLICIES

# ImageModeration 2020-12-29 errorcodes.py, complete.
IMS_CODES = [
    "DryRunOperation",
    "FailedOperation",
    "InternalError",
    "InternalError.InternalError",
    "InvalidParameter",
    "InvalidParameter.ImageAspectRatioTooLarge",
    "InvalidParameter.ImageDataTooSmall",
    "InvalidParameter.ImageSizeTooSmall",
    "InvalidParameter.InvalidImageContent",
    "InvalidParameter.InvalidParameter",
    "InvalidParameterValue",
    "InvalidParameterValue.EmptyImageContent",
    "InvalidParameterValue.ImageSizeTooSmall",
    "InvalidParameterValue.InvalidCallbackUrl",
    "InvalidParameterValue.InvalidContent",
    "InvalidParameterValue.InvalidDataId",
    "InvalidParameterValue.InvalidFileContentSize",
    "InvalidParameterValue.InvalidImageContent",
    "InvalidParameterValue.InvalidParameter",
    "LimitExceeded",
    "MissingParameter",
    "OperationDenied",
    "RequestLimitExceeded",
    "ResourceInUse",
    "ResourceInsufficient",
    "ResourceNotFound",
    "ResourceUnavailable",
    "ResourceUnavailable.ImageDownloadError",
    "ResourceUnavailable.InQueueError",
    "ResourceUnavailable.InvalidImageContent",
    "ResourceUnavailable.ModelCallFailed",
    "ResourcesSoldOut",
    "UnauthorizedOperation",
    "UnauthorizedOperation.Unauthorized",
    "UnknownParameter",
    "UnsupportedOperation",
]
# The common API 3.0 codes every product may return.
COMMON_CODES = [
    "ActionOffline",
    "AuthFailure.InvalidAuthorization",
    "AuthFailure.InvalidSecretId",
    "AuthFailure.MFAFailure",
    "AuthFailure.SecretIdNotFound",
    "AuthFailure.SignatureExpire",
    "AuthFailure.SignatureFailure",
    "AuthFailure.TokenFailure",
    "AuthFailure.UnauthorizedOperation",
    "DryRunOperation",
    "FailedOperation",
    "InternalError",
    "InvalidAction",
    "InvalidParameter",
    "InvalidParameterValue",
    "InvalidRequest",
    "IpInBlacklist",
    "IpNotInWhitelist",
    "LimitExceeded",
    "MissingParameter",
    "NoSuchProduct",
    "NoSuchVersion",
    "RequestLimitExceeded",
    "RequestLimitExceeded.GlobalRegionUinLimitExceeded",
    "RequestLimitExceeded.IPLimitExceeded",
    "RequestLimitExceeded.UinLimitExceeded",
    "RequestSizeLimitExceeded",
    "ResourceInUse",
    "ResourceInsufficient",
    "ResourceNotFound",
    "ResourceUnavailable",
    "ResponseSizeLimitExceeded",
    "ServiceUnavailable",
    "UnauthorizedOperation",
    "UnknownParameter",
    "UnsupportedOperation",
    "UnsupportedProtocol",
    "UnsupportedRegion",
]

RETRYABLE = {
    "RequestLimitExceeded",
    "RequestLimitExceeded.GlobalRegionUinLimitExceeded",
    "RequestLimitExceeded.IPLimitExceeded",
    "RequestLimitExceeded.UinLimitExceeded",
    "ResourceUnavailable.ModelCallFailed",
    "ResourceUnavailable.InQueueError",
    "InternalError",
    "InternalError.InternalError",
    "ServiceUnavailable",
}


@pytest.mark.parametrize("code", sorted(set(IMS_CODES) | set(COMMON_CODES)))
def test_every_documented_code_is_mapped_explicitly(code: str) -> None:
    assert code in ERROR_KINDS


def test_only_transient_codes_are_retried() -> None:
    retried = {code for code in ERROR_KINDS if KIND_POLICIES[kind_of(code)].retried}
    assert retried == RETRYABLE


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("AuthFailure.SignatureFailure", Kind.MISCONFIGURED),
        ("AuthFailure.SecretIdNotFound", Kind.MISCONFIGURED),
        ("UnauthorizedOperation.Unauthorized", Kind.ACCOUNT_UNAVAILABLE),
        ("InvalidParameter.ImageSizeTooSmall", Kind.INVALID_REQUEST),
        ("InvalidParameterValue.InvalidDataId", Kind.INVALID_REQUEST),
        ("ResourceUnavailable.ImageDownloadError", Kind.IMAGE_DOWNLOAD_FAILED),
        ("LimitExceeded", Kind.QUOTA_EXHAUSTED),
        ("UnsupportedRegion", Kind.MISCONFIGURED),
        # Codes added after this table fall back on their family, and failing that on FAILED.
        ("InternalError.SomethingNew", Kind.UNAVAILABLE),
        ("AuthFailure.SomethingNew", Kind.MISCONFIGURED),
        ("SomethingNew", Kind.FAILED),
        ("", Kind.FAILED),
    ],
)
def test_kind_of(code: str, kind: Kind) -> None:
    assert kind_of(code) is kind
