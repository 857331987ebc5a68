"""Credentials rotating under a real gateway process (`python -m service`) while it streams, against
the loopback IMS, CVM metadata and STS emulators.

The issue asks for a 60 s stream during which CVM tokens expire; the stream here runs 20 s with 6 s
tokens, so five expire during it, to keep the suite's time reasonable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from moderation.v1.moderation_service_pb2 import (
    ModerateImageRequest,
    StreamModerateImagesRequest,
    StreamModerateImagesResponse,
)

from emulator import EmulatorConfig, ImsEmulator, KeyIssuer, MetadataEmulator, StsEmulator
from tests.support.credential_gateway import (
    ROLE_ARN,
    GatewayProcess,
    Stub,
    assert_no_secret,
    gateway,
    metric,
)
from tests.support.credentials import NEW_ID, NEW_KEY, OLD_ID, OLD_KEY, PNG, write_secret_dir
from tests.support.eventually import eventually


async def paced_stream(
    stub: Stub, *, count: int, per_second: float, at: Callable[[int], Awaitable[None]] | None = None
) -> list[StreamModerateImagesResponse]:
    """`count` items sent evenly over `count / per_second` s; `at(i)` runs before item i is sent."""

    async def items() -> AsyncIterator[StreamModerateImagesRequest]:
        for i in range(count):
            if at is not None:
                await at(i)
            yield StreamModerateImagesRequest(
                correlation_id=str(i), request=ModerateImageRequest(content=PNG)
            )
            await asyncio.sleep(1 / per_second)

    return [answer async for answer in stub.StreamModerateImages(items(), timeout=count / per_second + 30)]


def failed(answers: list[StreamModerateImagesResponse]) -> list[str]:
    return [f"{a.correlation_id}: {a.error.message}" for a in answers if a.HasField("error")]


@pytest.fixture
def ims() -> Iterator[ImsEmulator]:
    config = EmulatorConfig(secret_id=OLD_ID, secret_key=OLD_KEY, keys={NEW_ID: NEW_KEY}, latency=0.05)
    with ImsEmulator(config) as emulator:
        yield emulator


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    """A mounted Kubernetes Secret holding the old key pair."""
    root = tmp_path / "secret"
    root.mkdir()
    write_secret_dir(root, OLD_ID, OLD_KEY)
    return root


def key_file_settings(ims: ImsEmulator, root: Path) -> dict[str, str]:
    return {
        "TENCENTCLOUD_SECRET_ID_FILE": str(root / "secret_id"),
        "TENCENTCLOUD_SECRET_KEY_FILE": str(root / "secret_key"),
        "IMS_ENDPOINT": ims.url,
    }


# --- key files ----------------------------------------------------------------------------------


async def test_key_file_rotated_mid_stream_then_the_old_key_revoked_no_item_fails(
    ims: ImsEmulator, tmp_path: Path, secrets_dir: Path
) -> None:
    async def rotate(i: int) -> None:
        # Tencent's way: the new key is added (emulator.config.keys), the Secret updated, and once the
        # gateway signs with the new key the old one is revoked.
        if i == 40:
            write_secret_dir(secrets_dir, NEW_ID, NEW_KEY)
        if i > 40 and NEW_ID in ims.stats.authenticated and not ims.config.revoked:
            ims.config.revoked = {OLD_ID}

    async with gateway(tmp_path, **key_file_settings(ims, secrets_dir)) as (process, stub):
        answers = await paced_stream(stub, count=120, per_second=20, at=rotate)
        metrics = await process.metrics()
    assert len(answers) == 120
    assert failed(answers) == []
    assert ims.config.revoked == {OLD_ID}
    assert ims.stats.authenticated[OLD_ID] >= 40
    assert ims.stats.authenticated[NEW_ID] >= 40
    assert metric(metrics, "moderation_credentials_rotations_total", "file") == 1
    assert metric(metrics, "moderation_credentials_failures_total", "file") == 0
    assert "credentials of backend tencent rotated from the file source; they do not expire" in process.output
    assert_no_secret(process.output + metrics, OLD_ID, OLD_KEY, NEW_ID, NEW_KEY)


async def test_old_key_revoked_the_moment_the_file_rotates_no_item_fails(
    ims: ImsEmulator, tmp_path: Path, secrets_dir: Path
) -> None:
    async def rotate_and_revoke(i: int) -> None:
        if i == 40:
            ims.config.revoked = {OLD_ID}
            write_secret_dir(secrets_dir, NEW_ID, NEW_KEY)

    async with gateway(tmp_path, **key_file_settings(ims, secrets_dir)) as (process, stub):
        answers = await paced_stream(stub, count=100, per_second=50, at=rotate_and_revoke)
    assert failed(answers) == []
    # Calls signed with the old key after the revocation (until the first refusal made the gateway
    # read the files again, or its watcher did) were refused unbilled and sent again with the new key.
    refused = ims.stats.errors_by_code.get("AuthFailure.SecretIdNotFound", 0)
    # The item sent right after the swap is signed with the old key: only a poll of the watcher in the
    # millisecond between the two could spare it the refusal.
    assert refused >= 1
    assert ims.stats.authenticated[NEW_ID] == 100 - 40
    assert ims.stats.billed == 100
    assert ims.stats.requests == 100 + refused
    assert_no_secret(process.output, OLD_ID, OLD_KEY, NEW_ID, NEW_KEY)


# --- the CVM instance role ----------------------------------------------------------------------


def instance_role_gateway(
    tmp_path: Path, metadata: MetadataEmulator, ims: ImsEmulator
) -> AbstractAsyncContextManager[tuple[GatewayProcess, Stub]]:
    """A gateway with no key pair: its credentials come from the CVM instance role."""
    return gateway(
        tmp_path,
        MODERATION_BACKEND="tencent",
        TENCENTCLOUD_METADATA_URL=metadata.metadata_url,
        IMS_ENDPOINT=ims.url,
    )


async def test_cvm_role_tokens_expire_during_a_stream_no_item_fails(ims: ImsEmulator, tmp_path: Path) -> None:
    issuer = KeyIssuer(ims, lifetime=6)
    with MetadataEmulator(issuer) as metadata:
        async with instance_role_gateway(tmp_path, metadata, ims) as (process, stub):
            started = time.time()
            answers = await paced_stream(stub, count=200, per_second=10)
            elapsed = time.time() - started

            async def settled() -> tuple[str, int] | None:
                # A rotation may be in flight: the metadata service has issued it, the gateway not counted it.
                issued, text = len(issuer.issued), await process.metrics()
                rotations = metric(text, "moderation_credentials_rotations_total", "cvm_role")
                return (text, issued) if rotations == issued else None

            metrics, issued = await eventually(settled)
    assert elapsed >= 20
    assert failed(answers) == []
    assert "AuthFailure.TokenFailure" not in ims.stats.errors_by_code
    # Every key was refreshed ahead of its expiry, so at least one per 6 s was used.
    used = [secret_id for secret_id in issuer.issued if secret_id in ims.stats.authenticated]
    assert len(used) >= elapsed // 6
    assert metric(metrics, "moderation_credentials_rotations_total", "cvm_role") == issued
    assert "rotated from the cvm_role source; valid for" in process.output
    tokens = [ims.config.temporary_keys[i] for i in issuer.issued]
    assert_no_secret(
        process.output + metrics, *issuer.issued, *(t.token for t in tokens), *(t.secret_key for t in tokens)
    )


async def test_cvm_metadata_failing_at_refresh_keeps_the_valid_token_then_recovers(
    ims: ImsEmulator, tmp_path: Path
) -> None:
    issuer = KeyIssuer(ims, lifetime=12)
    with MetadataEmulator(issuer) as metadata:

        async def outage(i: int) -> None:
            # 12 s tokens are refreshed 4 s before they expire, 8 s after the first was issued: the
            # endpoint fails from 7 s to 9.5 s, so the refresh and its first retries fail while the
            # token is still valid.
            issued_at = ims.config.temporary_keys[issuer.issued[0]].expires_at - issuer.lifetime
            metadata.failing = issued_at + 7 <= time.time() < issued_at + 9.5

        async with instance_role_gateway(tmp_path, metadata, ims) as (process, stub):
            answers = await paced_stream(stub, count=160, per_second=10, at=outage)
            metrics = await process.metrics()
    assert failed(answers) == []
    assert metric(metrics, "moderation_credentials_failures_total", "cvm_role") >= 1
    assert metric(metrics, "moderation_credentials_rotations_total", "cvm_role") >= 2
    assert (
        "refreshing the credentials of backend tencent from the cvm_role source failed: the instance "
        "metadata endpoint answered HTTP 500; keeping those held (valid for"
    ) in process.output
    assert "AuthFailure.TokenFailure" not in ims.stats.errors_by_code


# --- the TKE OIDC role --------------------------------------------------------------------------


async def test_tke_oidc_role_through_sts_with_a_rotated_web_identity_token(
    ims: ImsEmulator, tmp_path: Path
) -> None:
    token_file = tmp_path / "oidc-token"
    token_file.write_text("web-identity-1\n")
    issuer = KeyIssuer(ims, lifetime=6)
    with StsEmulator(
        issuer, provider_id="tke-oidc", role_arn=ROLE_ARN, web_identity_tokens={"web-identity-1"}
    ) as sts:
        async with gateway(
            tmp_path,
            MODERATION_BACKEND="tencent",
            TKE_REGION="ap-shanghai",
            TKE_PROVIDER_ID="tke-oidc",
            TKE_WEB_IDENTITY_TOKEN_FILE=str(token_file),
            TKE_ROLE_ARN=ROLE_ARN,
            TENCENTCLOUD_STS_ENDPOINT=sts.url,
            IMS_ENDPOINT=ims.url,
        ) as (process, stub):

            async def rotate_token(i: int) -> None:
                if i == 30:
                    # TKE rotates the projected token; STS then accepts only the new one.
                    token_file.write_text("web-identity-2\n")
                    sts.web_identity_tokens = {"web-identity-2"}

            answers = await paced_stream(stub, count=100, per_second=10, at=rotate_token)

            async def settled() -> tuple[str, int] | None:
                # A refresh may be in flight: STS has counted it, the gateway not yet.
                seen, text = len(sts.calls), await process.metrics()
                return (
                    (text, seen)
                    if metric(text, "moderation_credentials_rotations_total", "oidc_role") == seen
                    else None
                )

            metrics, rotations = await eventually(settled)
    assert failed(answers) == []
    calls = sts.calls[:rotations]
    assert len(calls) >= 10 // 4
    assert {c["Region"] for c in calls} == {"ap-shanghai"}
    assert {(c["ProviderId"], c["RoleArn"], c["DurationSeconds"]) for c in calls} == {
        ("tke-oidc", ROLE_ARN, 7200)
    }
    assert calls[0]["WebIdentityToken"] == "web-identity-1"
    assert calls[-1]["WebIdentityToken"] == "web-identity-2"
    assert len({c["RoleSessionName"] for c in calls}) == len(calls)
    assert metric(metrics, "moderation_credentials_rotations_total", "oidc_role") == len(calls)
    assert "AuthFailure.TokenFailure" not in ims.stats.errors_by_code
    assert_no_secret(process.output, "web-identity-1", "web-identity-2", *issuer.issued)
