"""The `tencent` backend type: Tencent Cloud IMS, signed with TC3-HMAC-SHA256."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Self
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, FilePath, model_validator

from backends.base import Backend, Billing
from backends.options import (
    BackendOptions,
    Secret,
    attempts,
    budget_key,
    rate_budget,
    secret_values,
    unreadable,
)
from backends.plugin import BackendType, BuildContext
from backends.tencent.auth import Credentials, TC3Auth
from backends.tencent.client import DEFAULT_REGION, DEFAULT_URL, SERVICE, ImsBackend, ImsEndpoint
from backends.tencent.credentials import (
    DEFAULT_STS_ENDPOINT,
    ChainSettings,
    WebIdentity,
    credential_provider,
    profile_path,
)
from backends.tencent.rekeyed import RekeyedBackend
from common.scrub import Scrubber

__all__ = ["REGION_PATTERN", "TENCENT", "Region", "TencentOptions"]

REGION_PATTERN = r"^[a-z]{2,}(-[a-z0-9]+)+$"
Region = Annotated[str, Field(pattern=REGION_PATTERN)]


def _http_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.query or parts.fragment:
        raise ValueError("must be an http(s) URL such as https://ims.tencentcloudapi.com")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials: the gateway signs its requests")
    return url.rstrip("/") + "/"


HttpUrl = Annotated[str, AfterValidator(_http_url)]
# The parts of the key pair, and the parts of the TKE OIDC role that only work together.
_PAIR = ("secret_id", "secret_key")
_WEB_IDENTITY = ("oidc_region", "oidc_provider_id", "oidc_token_file", "oidc_role_arn")


class TencentOptions(BackendOptions):
    # IMS's limit is per account (SecretId); every attempt is billed.
    qps: int = rate_budget("IMS_QPS")
    max_attempts: int = attempts("IMS_MAX_ATTEMPTS")
    budget_key: str | None = budget_key("IMS_BUDGET_KEY")
    price_per_10k: float = Field(
        25.0,
        ge=0,
        le=1_000_000,
        validation_alias="IMS_PRICE_PER_10K",
        description="CNY per 10,000 billed calls (IMS's pay-as-you-go price), for "
        "`moderation_estimated_cost_cny_total`.",
    )
    secret_id: Secret | None = Field(
        None,
        validation_alias="TENCENTCLOUD_SECRET_ID",
        description="Tencent Cloud API key id; with the key, the first credential source (see "
        "[Credentials](#credentials-rotation-temporary-keys-and-cam-roles)).",
        json_schema_extra={"default_text": "(required unless another source is configured)"},
    )
    secret_key: Secret | None = Field(
        None,
        validation_alias="TENCENTCLOUD_SECRET_KEY",
        description="Tencent Cloud API key.",
        json_schema_extra={"default_text": "(required unless another source is configured)"},
    )
    token: Secret | None = Field(
        None,
        validation_alias="TENCENTCLOUD_TOKEN",
        description="session token of temporary credentials (STS, CVM role); sent as `X-TC-Token`.",
    )
    # The files the pair was read from, watched for rotation (set beside the secrets they hold).
    secret_id_file: Path | None = Field(
        None,
        validation_alias="TENCENTCLOUD_SECRET_ID_FILE",
        description="the file `TENCENTCLOUD_SECRET_ID` is read from; re-read when it changes, and "
        "the new key signs from the next request.",
    )
    secret_key_file: Path | None = Field(
        None,
        validation_alias="TENCENTCLOUD_SECRET_KEY_FILE",
        description="the file `TENCENTCLOUD_SECRET_KEY` is read from; re-read when it changes.",
    )
    token_file: Path | None = Field(
        None,
        validation_alias="TENCENTCLOUD_TOKEN_FILE",
        description="the file `TENCENTCLOUD_TOKEN` is read from; re-read when it changes.",
    )
    metadata_url: HttpUrl | None = Field(
        None,
        validation_alias="TENCENTCLOUD_METADATA_URL",
        description="the CVM instance metadata endpoint, `http://metadata.tencentyun.com/latest/meta-data/` "
        "on a CVM: the instance role's temporary credentials are used when no key pair or profile is "
        "configured. Unset, the instance role is not tried (the gateway never probes for it).",
    )
    oidc_region: Region | None = Field(
        None, validation_alias="TKE_REGION", description="TKE OIDC role: the region of the STS call."
    )
    oidc_provider_id: str | None = Field(
        None, validation_alias="TKE_PROVIDER_ID", description="TKE OIDC role: the identity provider."
    )
    oidc_token_file: FilePath | None = Field(
        None,
        validation_alias="TKE_WEB_IDENTITY_TOKEN_FILE",
        description="TKE OIDC role: the web identity token's file, read again for every STS call.",
    )
    oidc_role_arn: str | None = Field(
        None, validation_alias="TKE_ROLE_ARN", description="TKE OIDC role: the role to assume."
    )
    sts_endpoint: HttpUrl = Field(
        DEFAULT_STS_ENDPOINT,
        validation_alias="TENCENTCLOUD_STS_ENDPOINT",
        description="the STS API URL `AssumeRoleWithWebIdentity` is sent to (TKE OIDC role).",
    )
    region: Region = Field(DEFAULT_REGION, validation_alias="IMS_REGION", description="`X-TC-Region`.")
    endpoint: HttpUrl = Field(
        DEFAULT_URL,
        validation_alias="IMS_ENDPOINT",
        description="IMS API URL; a regional host such as `https://ims.ap-guangzhou.tencentcloudapi.com` "
        "is lower-latency. Tests point it at the emulator over plain http.",
    )

    @model_validator(mode="before")
    @classmethod
    def _some_source(cls, data: Any) -> Any:
        """With no other source configured, the key pair is required (and reported as before)."""
        if not isinstance(data, dict):
            return data
        given = {key for key in cls.model_fields if _value(data, key) is not None}
        another_source = given & {*_WEB_IDENTITY, "metadata_url"} or profile_path() is not None
        if another_source and not given & set(_PAIR):
            return data
        # Under the variable's name, as pydantic names a missing field (a table's reader maps it back).
        return {**data, **{_alias(key): unreadable("is required") for key in _PAIR if key not in given}}

    @model_validator(mode="after")
    def _whole_web_identity(self) -> Self:
        given = [key for key in _WEB_IDENTITY if getattr(self, key) is not None]
        if given and len(given) != len(_WEB_IDENTITY):
            raise ValueError(
                "the TKE OIDC role needs all of TKE_REGION, TKE_PROVIDER_ID, TKE_WEB_IDENTITY_TOKEN_FILE "
                "and TKE_ROLE_ARN (in a routing file: oidc_region, oidc_provider_id, oidc_token_file, "
                "oidc_role_arn)"
            )
        return self

    def billing(self) -> Billing:
        return Billing(self.price_per_10k)

    def account(self) -> str:
        # IMS's limit is per SecretId; a role's keys change, so the source names its budget, in the
        # chain's order.
        if self.secret_id is not None:
            return self.secret_id.get_secret_value()
        if profile_path() is not None:
            return "profile"
        return f"cvm-role:{self.metadata_url}" if self.metadata_url else f"oidc-role:{self.oidc_role_arn}"

    @property
    def credentials(self) -> Credentials:
        """The key pair read from the variables or their files; LookupError when another source is
        configured instead."""
        given = self._given()
        if given is None:
            raise LookupError("no key pair is configured: the credentials come from another source")
        return given

    def _given(self) -> Credentials | None:
        if self.secret_id is None or self.secret_key is None:
            return None
        token = self.token.get_secret_value() if self.token else ""
        return Credentials(self.secret_id.get_secret_value(), self.secret_key.get_secret_value(), token)

    def chain(self) -> ChainSettings:
        identity = None
        if self.oidc_region and self.oidc_provider_id and self.oidc_token_file and self.oidc_role_arn:
            identity = WebIdentity(
                self.oidc_region, self.oidc_provider_id, self.oidc_token_file, self.oidc_role_arn
            )
        return ChainSettings(
            given=self._given(),
            secret_id_file=self.secret_id_file,
            secret_key_file=self.secret_key_file,
            token_file=self.token_file,
            metadata_url=self.metadata_url,
            web_identity=identity,
            sts_endpoint=self.sts_endpoint,
        )


def _alias(key: str) -> str:
    alias = TencentOptions.model_fields[key].validation_alias
    return alias if isinstance(alias, str) else key


def _value(data: dict[str, Any], key: str) -> Any:
    return data.get(key, data.get(_alias(key)))


def build(name: str, options: TencentOptions, context: BuildContext) -> Backend:
    meter = context.meter_provider.get_meter("moderation-gateway") if context.meter_provider else None
    scrubber = Scrubber(secret_values(options))
    gateway_scrubber = context.scrubber

    def learn(credentials: Credentials) -> None:
        """Rotated and temporary keys leave echoes and the gateway's outward strings as configured ones do."""
        secrets = (credentials.secret_id, credentials.secret_key, credentials.token)
        scrubber.add(secrets)
        if gateway_scrubber is not None:
            gateway_scrubber.add(secrets)

    credentials = credential_provider(options.chain(), backend=name, meter=meter, on_new=learn)
    inner = ImsBackend(
        name=name,
        endpoint=ImsEndpoint(url=options.endpoint, region=options.region),
        auth=TC3Auth(credentials, service=SERVICE),
        scrubber=scrubber,
        backend_type="tencent",
        account=options.budget_key or options.account(),
    )
    return RekeyedBackend(inner, credentials)


TENCENT = BackendType(
    name="tencent",
    summary="Tencent Cloud IMS (`ImageModeration`, API 2020-12-29, TC3-HMAC-SHA256 signing)",
    options=TencentOptions,
    build=build,
    # IMS's own downloader gives up after 3 s, trips on hotlink checks and refuses what the gateway can
    # reach: it is sent the fetched bytes.
    fetch="gateway",
    # A key pair, or a role asked for: the metadata endpoint is set only on purpose, and TKE injects
    # TKE_ROLE_ARN only into pods given an OIDC role.
    selected_by=(
        "TENCENTCLOUD_SECRET_ID",
        "TENCENTCLOUD_SECRET_KEY",
        "TENCENTCLOUD_METADATA_URL",
        "TKE_ROLE_ARN",
    ),
)
