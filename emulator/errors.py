"""IMS API errors: the exception every check raises, and the stock message of each code.

An error travels as `ImsError` up to the HTTP handler, which wraps it in the API 3.0 envelope
`{"Response": {"Error": {"Code", "Message"}, "RequestId"}}` on an HTTP 200, as Tencent does.
"""

from __future__ import annotations

import re

# Messages for the codes the emulator can return without a more specific text: the IMS list
# (errorcodes.py of ims 2020-12-29) plus the common API 3.0 codes. Injected `fail_next` codes use these.
DEFAULT_MESSAGES: dict[str, str] = {
    "AuthFailure.InvalidAuthorization": "The Authorization header is missing or malformed.",
    "AuthFailure.SecretIdNotFound": "The SecretId is not found, please ensure that your SecretId is correct.",
    "AuthFailure.SignatureExpire": "The signature has expired: the timestamp is too far from server time.",
    "AuthFailure.SignatureFailure": (
        "The provided credentials could not be validated. Please check your signature is correct."
    ),
    "AuthFailure.TokenFailure": "The token is invalid or has expired.",
    "AuthFailure.UnauthorizedOperation": "The request is not authorized by CAM.",
    "DryRunOperation": "DryRun: the request would have succeeded.",
    "FailedOperation": "The operation failed.",
    "InternalError": "An internal error occurred. Please retry later.",
    "InternalError.InternalError": "An internal error occurred. Please retry later.",
    "InvalidAction": "The requested action was not found.",
    "InvalidParameter": "A parameter is invalid.",
    "InvalidParameter.ImageAspectRatioTooLarge": "The image aspect ratio is too large.",
    "InvalidParameter.ImageDataTooSmall": "The image data is too small.",
    "InvalidParameter.ImageSizeTooSmall": "The image resolution is not supported.",
    "InvalidParameter.InvalidImageContent": "The image content is invalid.",
    "InvalidParameter.InvalidParameter": "A parameter is invalid.",
    "InvalidParameterValue": "A parameter value is invalid.",
    "InvalidParameterValue.EmptyImageContent": "The image content is empty.",
    "InvalidParameterValue.ImageSizeTooSmall": "The image resolution is too low.",
    "InvalidParameterValue.InvalidCallbackUrl": "The callback URL is invalid.",
    "InvalidParameterValue.InvalidContent": "FileContent and FileUrl are empty, or bad base64.",
    "InvalidParameterValue.InvalidDataId": "The DataId format is invalid.",
    "InvalidParameterValue.InvalidFileContentSize": "The file content size is abnormal.",
    "InvalidParameterValue.InvalidImageContent": "The image content is invalid.",
    "InvalidParameterValue.InvalidParameter": "A parameter value is invalid.",
    "LimitExceeded": "The quota has been exceeded.",
    "MissingParameter": "A required parameter is missing.",
    "NoSuchVersion": "The API version does not exist.",
    "OperationDenied": "The operation was denied.",
    "RequestLimitExceeded": "The request frequency limit was exceeded. Please reduce the frequency of calls.",
    "RequestSizeLimitExceeded": "The request body exceeds the size limit of 10 MB.",
    "ResourceInUse": "The resource is in use.",
    "ResourceInsufficient": "The resource is insufficient.",
    "ResourceNotFound": "The resource was not found.",
    "ResourceUnavailable": "The resource is unavailable.",
    "ResourceUnavailable.ImageDownloadError": "Failed to download the image.",
    "ResourceUnavailable.InQueueError": "Failed to enqueue the task.",
    "ResourceUnavailable.InvalidImageContent": "The image resource is invalid.",
    "ResourceUnavailable.ModelCallFailed": "The model call failed. Please retry.",
    "ResourcesSoldOut": "The resources are sold out.",
    "ServiceUnavailable": "The service is temporarily unavailable. Please retry later.",
    "UnauthorizedOperation": "The operation is unauthorized.",
    "UnauthorizedOperation.Unauthorized": (
        "The service is not activated, has no valid package, or the account is in arrears."
    ),
    "UnknownParameter": "An unknown parameter was supplied.",
    "UnsupportedOperation": "The operation is not supported.",
    "UnsupportedProtocol": "The HTTP method is not supported: use POST.",
    "UnsupportedRegion": "The action does not support this region.",
}

# The shape of an API 3.0 code (`Category` or `Category.Detail`), to tell codes from fault names.
ERROR_CODE_PATTERN = re.compile(r"[A-Z][A-Za-z]*(\.[A-Za-z0-9]+)*")


class ImsError(Exception):
    """A request failed with an IMS error code; the handler answers it in the error envelope."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message if message is not None else DEFAULT_MESSAGES.get(code, code)

    @property
    def is_rate_limit(self) -> bool:
        return self.code.startswith("RequestLimitExceeded")


def rate_limit_error(current: int, limit: int) -> ImsError:
    """`RequestLimitExceeded` with the message format IMS really uses."""
    return ImsError(
        "RequestLimitExceeded",
        f"Your current request times equals to `{current}` in a second, which exceeds the frequency "
        f"limit `{limit}` for a second. Please reduce the frequency of calls.",
    )
