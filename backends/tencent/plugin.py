"""The `tencent` backend type: Tencent Cloud IMS, signed with TC3-HMAC-SHA256."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

from backends.base import Backend
from backends.options import Declared, Secret
from backends.plugin import BackendType, BuildContext
from backends.tencent.auth import Credentials, TC3Auth
from backends.tencent.client import DEFAULT_REGION, DEFAULT_URL, SERVICE, ImsBackend, ImsEndpoint

__all__ = ["REGION_PATTERN", "TENCENT", "Region", "TencentOptions"]

REGION_PATTERN = r"^[a-z]{2,}(-[a-z0-9]+)+$"
Region = Annotated[str, Field(pattern=REGION_PATTERN)]


def _api_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.query or parts.fragment:
        raise ValueError("must be an http(s) URL such as https://ims.tencentcloudapi.com")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials: the gateway signs its requests")
    return url.rstrip("/") + "/"


class TencentOptions(Declared):
    secret_id: Secret = Field(
        validation_alias="TENCENTCLOUD_SECRET_ID", description="Tencent Cloud API key id."
    )
    secret_key: Secret = Field(
        validation_alias="TENCENTCLOUD_SECRET_KEY", description="Tencent Cloud API key."
    )
    token: Secret | None = Field(
        None,
        validation_alias="TENCENTCLOUD_TOKEN",
        description="session token of temporary credentials (STS, CVM role); sent as `X-TC-Token`.",
    )
    region: Region = Field(DEFAULT_REGION, validation_alias="IMS_REGION", description="`X-TC-Region`.")
    endpoint: Annotated[str, AfterValidator(_api_url)] = Field(
        DEFAULT_URL,
        validation_alias="IMS_ENDPOINT",
        description="IMS API URL; a regional host such as `https://ims.ap-guangzhou.tencentcloudapi.com` "
        "is lower-latency. Tests point it at the emulator over plain http.",
    )

    def account(self) -> str:
        # IMS's limit is per SecretId.
        return self.secret_id.get_secret_value()

    @property
    def credentials(self) -> Credentials:
        token = self.token.get_secret_value() if self.token else ""
        return Credentials(self.secret_id.get_secret_value(), self.secret_key.get_secret_value(), token)


def build(name: str, options: TencentOptions, context: BuildContext) -> Backend:
    return ImsBackend(
        name=name,
        endpoint=ImsEndpoint(url=options.endpoint, region=options.region),
        auth=TC3Auth(options.credentials, service=SERVICE),
        transport=context.transport,
        tracer_provider=context.tracer_provider,
        secrets=options.credentials.secrets,
    )


TENCENT = BackendType(
    name="tencent",
    summary="Tencent Cloud IMS (`ImageModeration`, API 2020-12-29, TC3-HMAC-SHA256 signing)",
    options=TencentOptions,
    build=build,
    selected_by=("TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY"),
)
