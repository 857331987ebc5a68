"""Every IMS error code (ImageModeration 2020-12-29 and the common API 3.0 codes) and its kind.

Retrying follows the kind: only rate limits and transient faults are retried. The table is explicit,
one line a code, so a reviewer can check each against the documentation; codes Tencent adds later fall
back on their family (the part before the dot), and failing that on `Kind.FAILED`, never on success.
"""

from __future__ import annotations

import re
from typing import Final

from backends.errors import Kind

# IMS's grammar of error codes, which what IMS and STS send is held to where it enters: dotted CamelCase
# (`InvalidParameterValue.InvalidDataId`, `HTTP502`); the longest documented one is 49 characters.
UPSTREAM_CODE: Final = re.compile(r"[A-Z][A-Za-z0-9]{0,47}(?:\.[A-Z][A-Za-z0-9]{0,47}){0,3}")

ERROR_KINDS: dict[str, Kind] = {
    # Rate limits: wait and retry.
    "RequestLimitExceeded": Kind.RATE_LIMITED,
    "RequestLimitExceeded.GlobalRegionUinLimitExceeded": Kind.RATE_LIMITED,
    "RequestLimitExceeded.IPLimitExceeded": Kind.RATE_LIMITED,
    "RequestLimitExceeded.UinLimitExceeded": Kind.RATE_LIMITED,
    # Transient faults: IMS itself says "retry" for ModelCallFailed.
    "InternalError": Kind.UNAVAILABLE,
    "InternalError.InternalError": Kind.UNAVAILABLE,
    "ResourceUnavailable.ModelCallFailed": Kind.UNAVAILABLE,
    "ResourceUnavailable.InQueueError": Kind.UNAVAILABLE,
    "ServiceUnavailable": Kind.UNAVAILABLE,
    # The caller's image or parameters.
    "InvalidParameter": Kind.INVALID_REQUEST,
    "InvalidParameter.ImageAspectRatioTooLarge": Kind.INVALID_REQUEST,
    "InvalidParameter.ImageDataTooSmall": Kind.INVALID_REQUEST,
    "InvalidParameter.ImageSizeTooSmall": Kind.INVALID_REQUEST,
    "InvalidParameter.InvalidImageContent": Kind.INVALID_REQUEST,
    "InvalidParameter.InvalidParameter": Kind.INVALID_REQUEST,
    "InvalidParameterValue": Kind.INVALID_REQUEST,
    "InvalidParameterValue.EmptyImageContent": Kind.INVALID_REQUEST,
    "InvalidParameterValue.ImageSizeTooSmall": Kind.INVALID_REQUEST,
    "InvalidParameterValue.InvalidContent": Kind.INVALID_REQUEST,
    "InvalidParameterValue.InvalidDataId": Kind.INVALID_REQUEST,
    "InvalidParameterValue.InvalidFileContentSize": Kind.INVALID_REQUEST,
    "InvalidParameterValue.InvalidImageContent": Kind.INVALID_REQUEST,
    "InvalidParameterValue.InvalidParameter": Kind.INVALID_REQUEST,
    "ResourceUnavailable.InvalidImageContent": Kind.INVALID_REQUEST,
    "MissingParameter": Kind.INVALID_REQUEST,
    "RequestSizeLimitExceeded": Kind.INVALID_REQUEST,
    # The image URL could not be fetched; IMS has already retried the download once.
    "ResourceUnavailable.ImageDownloadError": Kind.IMAGE_DOWNLOAD_FAILED,
    # Quotas and packages: waiting a second does not help.
    "LimitExceeded": Kind.QUOTA_EXHAUSTED,
    "ResourceInsufficient": Kind.QUOTA_EXHAUSTED,
    "ResourcesSoldOut": Kind.QUOTA_EXHAUSTED,
    # The account: not activated, no valid package, or in arrears.
    "UnauthorizedOperation": Kind.ACCOUNT_UNAVAILABLE,
    "UnauthorizedOperation.Unauthorized": Kind.ACCOUNT_UNAVAILABLE,
    # The gateway's own keys, clock, network identity or protocol settings.
    "AuthFailure": Kind.MISCONFIGURED,
    "AuthFailure.InvalidAuthorization": Kind.MISCONFIGURED,
    "AuthFailure.InvalidSecretId": Kind.MISCONFIGURED,
    "AuthFailure.MFAFailure": Kind.MISCONFIGURED,
    "AuthFailure.SecretIdNotFound": Kind.MISCONFIGURED,
    "AuthFailure.SignatureExpire": Kind.MISCONFIGURED,
    "AuthFailure.SignatureFailure": Kind.MISCONFIGURED,
    "AuthFailure.TokenFailure": Kind.MISCONFIGURED,
    "AuthFailure.UnauthorizedOperation": Kind.MISCONFIGURED,
    "IpInBlacklist": Kind.MISCONFIGURED,
    "IpNotInWhitelist": Kind.MISCONFIGURED,
    "ActionOffline": Kind.MISCONFIGURED,
    "InvalidAction": Kind.MISCONFIGURED,
    "NoSuchProduct": Kind.MISCONFIGURED,
    "NoSuchVersion": Kind.MISCONFIGURED,
    "UnsupportedRegion": Kind.MISCONFIGURED,
    "UnsupportedProtocol": Kind.MISCONFIGURED,
    "UnknownParameter": Kind.MISCONFIGURED,
    "InvalidRequest": Kind.MISCONFIGURED,
    "InvalidParameterValue.InvalidCallbackUrl": Kind.MISCONFIGURED,
    # Refusals neither a retry nor the caller can change.
    "DryRunOperation": Kind.FAILED,
    "FailedOperation": Kind.FAILED,
    "OperationDenied": Kind.FAILED,
    "ResourceInUse": Kind.FAILED,
    "ResourceNotFound": Kind.FAILED,
    # Not among the documented transient codes: retrying an unexplained refusal only spends money.
    "ResourceUnavailable": Kind.FAILED,
    "ResponseSizeLimitExceeded": Kind.FAILED,
    "UnsupportedOperation": Kind.FAILED,
}


# Codes that mean "this key pair is not (or no longer) valid": after a rotation, the key a call was
# signed with may have been revoked since. IMS refuses these before any moderation, so a call that got
# one was not billed and may be sent once more with newer credentials. Their kind stays MISCONFIGURED.
REVOKED_KEY_CODES = frozenset({"AuthFailure.SecretIdNotFound", "AuthFailure.SignatureFailure"})


def kind_of(code: str) -> Kind:
    if code in ERROR_KINDS:
        return ERROR_KINDS[code]
    return ERROR_KINDS.get(code.split(".", 1)[0], Kind.FAILED)


# The request field an INVALID_REQUEST code is about, so callers are told what to fix.
_FIELDS = {
    "InvalidParameterValue.InvalidDataId": "data_id",
    "InvalidParameter.InvalidParameter": "",
    "InvalidParameterValue.InvalidParameter": "",
    "InvalidParameter": "",
    "InvalidParameterValue": "",
    "RequestSizeLimitExceeded": "content",
}


def field_of(code: str) -> str:
    """Every other invalid-request code is about the image."""
    return _FIELDS.get(code, "image")


# What the gateway says of each kind of IMS error, in place of IMS's own message: that text may echo
# the request (the key id, the caller's URL) and is logged, scrubbed and cut, but never relayed.
KIND_TEXTS: dict[Kind, str] = {
    Kind.INVALID_REQUEST: "IMS refused the image or a parameter",
    Kind.IMAGE_DOWNLOAD_FAILED: "IMS could not download the image URL",
    Kind.RATE_LIMITED: "IMS's request rate limit was exceeded",
    Kind.QUOTA_EXHAUSTED: "the IMS quota or resource package is used up",
    Kind.MISCONFIGURED: "IMS refused the gateway's credentials or settings",
    Kind.ACCOUNT_UNAVAILABLE: "the gateway's IMS account cannot serve requests",
    Kind.UNAVAILABLE: "IMS had a transient fault",
    Kind.TIMEOUT: "IMS did not answer in time",
    Kind.FAILED: "IMS refused the request",
    Kind.THROTTLED: "no rate slot was free",
    Kind.OVERLOADED: "the backend had no room for the image",
    Kind.CALLER_QUOTA_EXHAUSTED: "the caller's quota is used up",
    Kind.QUOTA_UNAVAILABLE: "the quota counts cannot be reached",
}
