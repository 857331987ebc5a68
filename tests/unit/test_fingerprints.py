"""Each backend type's fingerprint: what can change its verdicts changes it, and nothing secret is in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.base import Backend, Fingerprint
from backends.local.fingerprint import local_fingerprint
from backends.local.settings import LocalSettings
from backends.plugin import BuildContext
from backends.private import PrivateOptions, private_backend
from backends.tencent.plugin import TENCENT, TencentOptions

KEY = "secret-key-0123456789abcdef"


def tencent(secret_id: str = "AKIDone", budget_key: str | None = None, **options: str) -> Fingerprint:
    backend: Backend = TENCENT.make(
        "cloud",
        TencentOptions(
            secret_id=secret_id,
            secret_key=KEY,
            budget_key=budget_key,
            **options,  # type: ignore[arg-type]
        ),
        BuildContext(),
    )
    return backend.fingerprint


def test_tencent_changes_with_account_endpoint_and_region() -> None:
    base = tencent()
    others = [
        tencent("AKIDtwo"),
        tencent(endpoint="https://ims.ap-beijing.tencentcloudapi.com"),
        tencent(region="ap-beijing"),
    ]
    assert len({base.digest, *(other.digest for other in others)}) == len(others) + 1
    assert base.account != tencent("AKIDtwo").account
    assert "AKID" not in repr(base)
    assert KEY not in repr(base)


def test_a_budget_key_names_the_account_whatever_key_of_it_signs() -> None:
    assert tencent("AKIDone", "ims-main") == tencent("AKIDtwo", "ims-main")
    assert tencent("AKIDone", "ims-main").account != tencent("AKIDone", "ims-other").account


def test_a_private_deployment_is_named_by_its_url_and_its_account() -> None:
    def private(url: str, account: str | None = None) -> Fingerprint:
        return private_backend(PrivateOptions(url=url, auth="none", budget_key=account)).fingerprint

    assert private("http://ims.internal").account == ""
    assert private("http://ims.internal") != private("http://ims-2.internal")
    assert private("http://ims.internal", "ims-main").account != ""
    assert private("http://ims.internal") != tencent(endpoint="http://ims.internal")


@pytest.fixture
def libraries(tmp_path: Path) -> LocalSettings:
    for folder in ("keywords", "allow", "deny/Porn"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "keywords" / "ads.toml").write_text('id = "ads"\nname = "Ads"\nlabel = "Ad"\nwords = ["x"]\n')
    (tmp_path / "deny" / "Porn" / "a.png").write_bytes(b"sample a")
    (tmp_path / "policy.toml").write_text("")
    return LocalSettings(
        policy_file=tmp_path / "policy.toml",
        keyword_dir=tmp_path / "keywords",
        allow_dir=tmp_path / "allow",
        deny_dir=tmp_path / "deny",
    )


def test_local_changes_with_its_limits_and_not_with_the_policy(libraries: LocalSettings) -> None:
    assert libraries.deny_dir is not None
    assert libraries.keyword_dir is not None
    assert libraries.policy_file is not None
    seen = local_fingerprint(libraries).digest
    # The deprecated local policy, keyword libraries and samples are the gateway's policy now, applied
    # to cached answers on the way out: they are not the backend's answer.
    (libraries.deny_dir / "Porn" / "b.png").write_bytes(b"sample b")
    (libraries.keyword_dir / "ads.toml").write_text('id = "ads"\nname = "Ads"\nlabel = "Ad"\nwords = ["y"]\n')
    libraries.policy_file.write_text("# another policy\n")
    assert local_fingerprint(libraries).digest == seen
    assert local_fingerprint(libraries.model_copy(update={"max_pixels": 1000})).digest != seen
    assert local_fingerprint(libraries.model_copy(update={"max_frames": 2})).digest != seen
    assert local_fingerprint(libraries).account == ""
