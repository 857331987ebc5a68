"""Credential sources, refresh and the revoked-key retry, against the loopback emulators (IMS, CVM
metadata, STS) and real files; the gateway processes are in test_credentials_process.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Hashable
from dataclasses import replace
from pathlib import Path

import pytest
from moderation.v1.moderation_service_pb2 import Suggestion
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from backends.errors import BackendError, Kind
from backends.plugin import BuildContext
from backends.registry import default_type
from backends.tencent.credentials import (
    CredentialError,
    Credentials,
    InstanceRole,
    KeyFiles,
    ProfileFile,
    RefreshingCredentials,
    WebIdentity,
    WebIdentityRole,
    credential_source,
    refresh,
)
from backends.tencent.plugin import TENCENT, TencentOptions
from common.scrub import Scrubber
from emulator import ImsEmulator, KeyIssuer, MetadataEmulator, StsEmulator
from service.routing_file import load_routes
from tests.support.credentials import (
    NEW_ID,
    NEW_KEY,
    OLD_ID,
    OLD_KEY,
    REQUEST,
    file_options,
    ims,
    make,
    write_secret_dir,
)
from tests.support.eventually import eventually

__all__ = ["ims"]  # the fixture, shared with the other credential tests


# --- the emulator: several keys, revocation, tokens and their expiry ----------------------------


async def test_the_emulator_accepts_each_key_of_the_account_until_it_is_revoked(ims: ImsEmulator) -> None:
    backends = [
        make(TencentOptions(secret_id=i, secret_key=k, endpoint=ims.url))
        for i, k in ((OLD_ID, OLD_KEY), (NEW_ID, NEW_KEY))
    ]
    for backend in backends:
        assert (await backend.moderate(REQUEST, timeout=5)).suggestion == Suggestion.SUGGESTION_PASS
    ims.config.revoked = {OLD_ID}
    with pytest.raises(BackendError) as refused:
        await backends[0].moderate(REQUEST, timeout=5)
    assert (refused.value.kind, refused.value.upstream_code) == (
        Kind.MISCONFIGURED,
        "AuthFailure.SecretIdNotFound",
    )
    assert (await backends[1].moderate(REQUEST, timeout=5)).suggestion == Suggestion.SUGGESTION_PASS
    assert ims.stats.authenticated == {OLD_ID: 1, NEW_ID: 2}
    for backend in backends:
        await backend.aclose()


async def test_a_temporary_key_needs_its_token_and_is_refused_once_expired(ims: ImsEmulator) -> None:
    secret_id, key = KeyIssuer(ims, lifetime=60).issue()
    with_token = make(
        TencentOptions(secret_id=secret_id, secret_key=key.secret_key, token=key.token, endpoint=ims.url)
    )
    without = make(TencentOptions(secret_id=secret_id, secret_key=key.secret_key, endpoint=ims.url))
    assert (await with_token.moderate(REQUEST, timeout=5)).suggestion == Suggestion.SUGGESTION_PASS
    with pytest.raises(BackendError, match="credentials") as missing:
        await without.moderate(REQUEST, timeout=5)
    assert missing.value.upstream_code == "AuthFailure.TokenFailure"
    ims.config.temporary_keys = {secret_id: replace(key, expires_at=time.time() - 1)}
    with pytest.raises(BackendError) as expired:
        await with_token.moderate(REQUEST, timeout=5)
    assert expired.value.upstream_code == "AuthFailure.TokenFailure"
    await with_token.aclose()
    await without.aclose()


# --- key files ----------------------------------------------------------------------------------


async def test_a_rotated_key_file_signs_from_the_next_request(ims: ImsEmulator, tmp_path: Path) -> None:
    write_secret_dir(tmp_path, OLD_ID, OLD_KEY)
    backend = make(file_options(ims, tmp_path))
    await backend.start()
    try:
        await backend.moderate(REQUEST, timeout=5)
        write_secret_dir(tmp_path, NEW_ID, NEW_KEY)

        async def signed_with_the_new_key() -> bool:
            await backend.moderate(REQUEST, timeout=5)
            return NEW_ID in ims.stats.authenticated

        await eventually(signed_with_the_new_key, within=5, every=0.05)
        ims.config.revoked = {OLD_ID}
        assert (await backend.moderate(REQUEST, timeout=5)).suggestion == Suggestion.SUGGESTION_PASS
    finally:
        await backend.aclose()
    assert NEW_ID in ims.stats.authenticated
    assert "AuthFailure.SecretIdNotFound" not in ims.stats.errors_by_code


async def test_a_key_revoked_before_the_rotation_is_noticed_is_reread_once_and_retried_once(
    ims: ImsEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The watcher never looks: only the refused call can make the gateway read the files again.
    monkeypatch.setattr(refresh, "POLL_SECONDS", 3600.0)
    write_secret_dir(tmp_path, OLD_ID, OLD_KEY)
    backend = make(file_options(ims, tmp_path))
    await backend.start()
    try:
        write_secret_dir(tmp_path, NEW_ID, NEW_KEY)
        ims.config.revoked = {OLD_ID}
        calls = await asyncio.gather(*(backend.moderate(REQUEST, timeout=5) for _ in range(5)))
    finally:
        await backend.aclose()
    assert all(c.suggestion == Suggestion.SUGGESTION_PASS for c in calls)
    # Each call was refused once (unbilled) and sent once more, with the key re-read from the files.
    assert ims.stats.errors_by_code == {"AuthFailure.SecretIdNotFound": 5}
    assert ims.stats.authenticated == {NEW_ID: 5}
    assert ims.stats.billed == 5


async def test_a_refused_key_with_nothing_newer_is_not_retried(ims: ImsEmulator, tmp_path: Path) -> None:
    write_secret_dir(tmp_path, OLD_ID, OLD_KEY)
    backend = make(file_options(ims, tmp_path))
    await backend.start()
    ims.config.revoked = {OLD_ID}
    try:
        with pytest.raises(BackendError) as refused:
            await backend.moderate(REQUEST, timeout=5)
    finally:
        await backend.aclose()
    assert refused.value.upstream_code == "AuthFailure.SecretIdNotFound"
    assert ims.stats.requests == 1


def test_a_pair_caught_mid_rotation_is_read_again(tmp_path: Path) -> None:
    write_secret_dir(tmp_path, OLD_ID, OLD_KEY)
    files = KeyFiles(Credentials("", ""), tmp_path / "secret_id", tmp_path / "secret_key")
    original = files.version
    versions = iter([("a",), ("b",), ("b",), ("b",)])
    object.__setattr__(files, "version", lambda: next(versions))
    assert files.read() == Credentials(OLD_ID, OLD_KEY)
    object.__setattr__(files, "version", original)


def test_the_profile_file_where_the_sdk_looks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = tmp_path / ".tencentcloud" / "credentials"
    profile.parent.mkdir()
    profile.write_text(f"[default]\nsecret_id = {OLD_ID}\nsecret_key = {OLD_KEY}\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    # No key pair configured: the profile is the source, and it satisfies validation.
    options = TencentOptions.from_environment({"MODERATION_BACKEND": "tencent"})
    source = credential_source(options.chain())
    assert isinstance(source, ProfileFile)
    assert source.read() == Credentials(OLD_ID, OLD_KEY)
    profile.write_text("[other]\nsecret_id = x\n")
    with pytest.raises(CredentialError, match=r"no \[default\]"):
        source.read()


# --- refresh ------------------------------------------------------------------------------------


class ScriptedSource:
    """One unit's stand-in for a remote source: each load answers the next scripted outcome."""

    name = "scripted"

    def __init__(self, outcomes: list[Credentials | CredentialError]) -> None:
        self._outcomes = outcomes
        self.loads = 0
        self.closed = False

    def version(self) -> Hashable:
        return None

    async def load(self) -> Credentials:
        outcome = self._outcomes[min(self.loads, len(self._outcomes) - 1)]
        self.loads += 1
        if isinstance(outcome, CredentialError):
            raise outcome
        return outcome

    async def aclose(self) -> None:
        self.closed = True


def _counts(reader: InMemoryMetricReader) -> dict[str, int]:
    data = reader.get_metrics_data()
    counts: dict[str, int] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    assert dict(point.attributes or {})["moderation.credential_source"] == "scripted"
                    counts[metric.name] = counts.get(metric.name, 0) + int(point.value)  # type: ignore[union-attr]
    return counts


async def test_refresh_runs_ahead_of_expiry_and_keeps_valid_credentials_through_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = time.time()
    first = Credentials("AKIDone", "key-one-secret", "token-one-secret", expires_at=now + 3)
    second = Credentials("AKIDtwo", "key-two-secret", "token-two-secret", expires_at=now + 30)
    failure = CredentialError("the scripted source is down")
    source = ScriptedSource([first, failure, failure, second])
    reader = InMemoryMetricReader()
    provider = RefreshingCredentials(
        source, backend="cloud", meter=MeterProvider(metric_readers=[reader]).get_meter("t")
    )
    caplog.set_level(logging.INFO, logger=refresh.__name__)
    await provider.start()
    try:
        assert provider.current() == first
        seen = set()

        def rotated() -> bool:
            seen.add(current := provider.current())
            return current == second

        # Before the credentials expire.
        await eventually(rotated, within=now + 3 - time.time())
        seen.discard(second)
    finally:
        await provider.aclose()
    assert seen == {first}, "while refreshes failed, the still-valid credentials were kept"
    assert source.loads == 4
    assert source.closed
    assert _counts(reader) == {"moderation.credentials.rotations": 2, "moderation.credentials.failures": 2}
    lines = [r.getMessage() for r in caplog.records]
    assert sum("failed: the scripted source is down" in line for line in lines) == 2
    assert sum("rotated from the scripted source" in line for line in lines) == 1
    for secret in (*first.secrets, *second.secrets):
        assert not any(secret in line for line in lines)


async def test_a_source_answering_the_same_credentials_again_is_not_asked_in_a_busy_loop() -> None:
    # As a metadata service may until shortly before expiry: the same key, asked for again later.
    same = Credentials("AKIDsame", "key-same-secret", "token-same", expires_at=time.time() + 1.5)
    source = ScriptedSource([same])
    provider = RefreshingCredentials(source, backend="cloud")
    await provider.start()
    await asyncio.sleep(2.0)
    await provider.aclose()
    assert provider.current() == same
    # Renewal due at 1 s; asked again after a third of what is left, then every half second at least.
    assert 2 <= source.loads <= 6


async def test_a_source_with_no_credentials_at_start_leaves_calls_misconfigured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(refresh, "START_TIMEOUT_SECONDS", 0.3)
    source = ScriptedSource([CredentialError("nobody home")])
    provider = RefreshingCredentials(source, backend="cloud")
    started = time.monotonic()
    await provider.start()
    assert time.monotonic() - started < 1.0
    with pytest.raises(CredentialError, match="nobody home"):
        provider.current()
    closing = time.monotonic()
    await provider.aclose()
    assert time.monotonic() - closing < 0.5, "closing cancels the refresh task at once"


# --- the remote sources against their emulators -------------------------------------------------


async def test_the_instance_role_from_the_metadata_endpoint(ims: ImsEmulator) -> None:
    with MetadataEmulator(KeyIssuer(ims, lifetime=7200)) as metadata:
        role = InstanceRole(metadata.metadata_url)
        credentials = await role.load()
        assert credentials.secret_id.startswith("AKIDtmp")
        assert credentials.token
        assert credentials.expires_at == pytest.approx(time.time() + 7200, abs=5)
        metadata.failing = True
        with pytest.raises(CredentialError, match="HTTP 500"):
            await role.load()
        metadata.failing = False
        metadata.role = "another-role"  # the instance's role was replaced: the new one is asked for
        assert (await role.load()).secret_id != credentials.secret_id
        await role.aclose()


async def test_the_oidc_role_through_sts(ims: ImsEmulator, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("oidc-token-1\n")
    with StsEmulator(
        KeyIssuer(ims, lifetime=7200),
        provider_id="tke-oidc",
        role_arn="qcs::cam::uin/100:roleName/gateway",
        web_identity_tokens={"oidc-token-1"},
    ) as sts:
        identity = WebIdentity("ap-shanghai", "tke-oidc", token_file, "qcs::cam::uin/100:roleName/gateway")
        role = WebIdentityRole(identity, endpoint=sts.url + "/")
        credentials = await role.load()
        assert credentials.secret_id.startswith("AKIDtmp")
        assert credentials.token
        (call,) = sts.calls
        assert call["Region"] == "ap-shanghai"
        assert call["DurationSeconds"] == 7200
        assert call["WebIdentityToken"] == "oidc-token-1"
        token_file.write_text("oidc-token-2\n")  # TKE rotated the projected token; STS knows only the old
        with pytest.raises(CredentialError) as refused:
            await role.load()
        assert (
            str(refused.value)
            == "STS refused AssumeRoleWithWebIdentity: InvalidParameter.WebIdentityTokenError"
        )
        sts.web_identity_tokens = {"oidc-token-2"}
        assert (await role.load()).secret_id != credentials.secret_id
        await role.aclose()


# --- configuration ------------------------------------------------------------------------------


def test_an_incomplete_oidc_role_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs all of TKE_REGION"):
        TencentOptions.from_environment({"TKE_REGION": "ap-guangzhou", "TKE_ROLE_ARN": "qcs::cam::x"})


@pytest.mark.parametrize(
    "variable",
    ["TENCENTCLOUD_METADATA_URL", "TKE_ROLE_ARN", "TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY"],
)
def test_a_role_asked_for_selects_the_tencent_backend(variable: str) -> None:
    assert default_type({variable: "http://127.0.0.1:1/"}) == "tencent"


def test_a_metadata_endpoint_needs_no_key_pair() -> None:
    options = TencentOptions.from_environment(
        {"TENCENTCLOUD_METADATA_URL": "http://127.0.0.1:1/latest/meta-data"}
    )
    assert isinstance(credential_source(options.chain()), InstanceRole)
    assert options.metadata_url == "http://127.0.0.1:1/latest/meta-data/"


def test_a_routing_file_key_file_is_watched(tmp_path: Path) -> None:
    write_secret_dir(tmp_path, OLD_ID, OLD_KEY)
    routes = tmp_path / "routes.toml"
    routes.write_text(
        f"""
[backends.cloud]
type = "tencent"
secret_id_file = "{tmp_path / "secret_id"}"
secret_key_file = "{tmp_path / "secret_key"}"

[backends.role]
type = "tencent"
metadata_url = "http://127.0.0.1:1/latest/meta-data/"

[default]
chain = ["cloud", "role"]
"""
    )
    backends = load_routes(routes, {}).backends
    cloud, role = backends["cloud"].options, backends["role"].options
    assert isinstance(cloud, TencentOptions)
    assert isinstance(role, TencentOptions)
    source = credential_source(cloud.chain())
    assert isinstance(source, KeyFiles)
    assert source.secret_key == tmp_path / "secret_key"
    assert source.read() == Credentials(OLD_ID, OLD_KEY)
    assert isinstance(credential_source(role.chain()), InstanceRole)


async def test_credentials_that_expire_while_refreshes_fail_are_misconfigured_until_one_succeeds(
    ims: ImsEmulator,
) -> None:
    issuer = KeyIssuer(ims, lifetime=1.5)
    with MetadataEmulator(issuer) as metadata:
        backend = make(TencentOptions(metadata_url=metadata.metadata_url, endpoint=ims.url))
        await backend.start()
        try:
            assert (await backend.moderate(REQUEST, timeout=5)).suggestion == Suggestion.SUGGESTION_PASS
            metadata.failing = True

            async def refused() -> BackendError | None:
                try:
                    await backend.moderate(REQUEST, timeout=5)
                except BackendError as error:
                    return error
                return None

            expired = await eventually(refused, within=3, every=0.1)  # past the only key's expiry
            assert (expired.kind, expired.upstream_code) == (Kind.MISCONFIGURED, "AuthFailure.TokenFailure")
            metadata.failing = False

            # The next refresh (within half a second) gets a new key; calls succeed from then on.
            async def answered() -> bool:
                with contextlib.suppress(BackendError):
                    return (
                        await backend.moderate(REQUEST, timeout=5)
                    ).suggestion == Suggestion.SUGGESTION_PASS
                return False

            await eventually(answered, within=3, every=0.1)
            assert len(issuer.issued) >= 2
        finally:
            await backend.aclose()
    assert len(issuer.issued) >= 2


async def test_a_temporary_key_echoed_by_the_upstream_is_scrubbed_like_a_configured_one(
    ims: ImsEmulator,
) -> None:
    # Role keys are never configured: the backend learns them at run time, and so must both scrubbers.
    ims.config.hostile = "echo_headers_result"
    gateway = Scrubber()
    with MetadataEmulator(KeyIssuer(ims, lifetime=7200)) as metadata:
        options = TencentOptions.from_environment(
            {"TENCENTCLOUD_METADATA_URL": metadata.metadata_url, "IMS_ENDPOINT": ims.url}
        )
        backend = TENCENT.make("cloud", options, BuildContext(scrubber=gateway))
        await backend.start()
        try:
            answer = await backend.moderate(REQUEST, timeout=5)
        finally:
            await backend.aclose()
    (key_id,) = (identity for identity in ims.stats.authenticated if identity.startswith("AKIDtmp"))
    assert key_id not in str(answer)
    assert gateway.holds_secret(f"label {key_id}")
    assert len(gateway.secrets) == 3  # the key id, the key and the session token
