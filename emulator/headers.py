"""The API 3.0 common parameters carried in headers: action, version, region, host and content type.

Checked before the signature, so a client pointed at the wrong action or region learns that rather
than a signature error.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Protocol

from .errors import ImsError

ACTION = "ImageModeration"
VERSION = "2020-12-29"


class Headers(Protocol):
    """What the checks need from a header collection (`email.message.Message` fits)."""

    def get(self, name: str) -> str | None: ...


def required(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None or not value.strip():
        raise ImsError("MissingParameter", f"The request is missing a required parameter `{name}`.")
    return value.strip()


def check_common_parameters(headers: Headers, regions: Set[str]) -> None:
    action = required(headers, "X-TC-Action")
    if action != ACTION:
        # The async action and the removed ones exist in IMS, but the emulator serves only this one.
        raise ImsError("InvalidAction", f"The requested action `{action}` was not found.")
    version = required(headers, "X-TC-Version")
    if version != VERSION:
        raise ImsError("NoSuchVersion", f"The requested version `{version}` of service `ims` does not exist.")
    region = required(headers, "X-TC-Region")
    if region not in regions:
        raise ImsError("UnsupportedRegion", f"The `{ACTION}` action does not support the region `{region}`.")
    required(headers, "Host")
    content_type = required(headers, "Content-Type")
    # TC3 POST carries JSON; any parameters (e.g. a charset) are fine as long as they were signed.
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise ImsError(
            "InvalidParameter", f"The Content-Type `{content_type}` is not supported: use application/json."
        )
