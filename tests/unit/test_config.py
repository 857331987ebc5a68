"""Settings from the environment: defaults, files for secrets, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ConfigError, load_settings

CREDENTIALS = {"TENCENTCLOUD_SECRET_ID": "AKIDtestid", "TENCENTCLOUD_SECRET_KEY": "s3cr3t-key-value"}


def test_defaults() -> None:
    settings = load_settings(CREDENTIALS)
    assert settings.listen == "[::]:50051"
    assert settings.backend == "tencent"
    assert settings.max_attempts == 3
    assert settings.backend_timeout == 15.0
    assert settings.shutdown_grace >= 15.0
    assert settings.tencent is not None
    assert settings.tencent.region == "ap-guangzhou"
    assert settings.tencent.endpoint == "https://ims.tencentcloudapi.com/"
    assert settings.tencent.credentials.token == ""


def test_no_credentials_means_the_embedded_backend() -> None:
    settings = load_settings({})
    assert settings.backend == "local"
    assert settings.local is not None
    assert settings.tencent is None


def test_tencent_without_credentials_names_the_variables_to_set() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"MODERATION_BACKEND": "tencent"})
    assert "TENCENTCLOUD_SECRET_ID" in str(caught.value)
    assert "TENCENTCLOUD_SECRET_KEY" in str(caught.value)


def test_local_settings(tmp_path: Path) -> None:
    settings = load_settings(
        {"MODERATION_LOCAL_KEYWORDS": str(tmp_path), "MODERATION_FETCH_ALLOW_NETWORKS": "127.0.0.0/8, ::1"}
    )
    assert settings.local is not None
    assert settings.local.keyword_dir == tmp_path
    assert [str(n) for n in settings.local.fetch.allowed_networks] == ["127.0.0.0/8", "::1/128"]
    with pytest.raises(ConfigError, match="MODERATION_LOCAL_ALLOW_DIR"):
        load_settings({"MODERATION_LOCAL_ALLOW_DIR": str(tmp_path / "missing")})


def test_secrets_from_files(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("from-a-file\n")
    settings = load_settings(
        {
            "TENCENTCLOUD_SECRET_ID": "AKIDtestid",
            "TENCENTCLOUD_SECRET_KEY_FILE": str(tmp_path / "key"),
            "TENCENTCLOUD_TOKEN": "tok",
        }
    )
    assert settings.tencent is not None
    assert settings.tencent.credentials.secret_key == "from-a-file"
    assert settings.tencent.credentials.token == "tok"
    assert set(settings.secrets) == {"AKIDtestid", "from-a-file", "tok"}


def test_every_problem_is_reported_without_secret_values() -> None:
    env = {
        "TENCENTCLOUD_SECRET_ID": "AKIDtestid",
        "TENCENTCLOUD_SECRET_KEY": " padded-secret ",
        "IMS_MAX_ATTEMPTS": "many",
        "IMS_REGION": "Guangzhou!",
        "IMS_ENDPOINT": "ftp://ims.example",
        "MODERATION_LISTEN": "nowhere",
        "MODERATION_SHUTDOWN_GRACE": "5",
        "MODERATION_BACKEND_TIMEOUT": "60",
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    text = str(caught.value)
    for name in (
        "TENCENTCLOUD_SECRET_KEY",
        "IMS_MAX_ATTEMPTS",
        "IMS_REGION",
        "IMS_ENDPOINT",
        "MODERATION_LISTEN",
        "MODERATION_SHUTDOWN_GRACE",
        "MODERATION_BACKEND_TIMEOUT",
    ):
        assert name in text
    assert "padded-secret" not in text
    assert len(caught.value.problems) == 7


def test_unknown_backend() -> None:
    with pytest.raises(ConfigError, match="MODERATION_BACKEND"):
        load_settings({**CREDENTIALS, "MODERATION_BACKEND": "magic"})


def test_unreadable_secret_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TENCENTCLOUD_SECRET_KEY_FILE"):
        load_settings(
            {"TENCENTCLOUD_SECRET_ID": "AKIDtestid", "TENCENTCLOUD_SECRET_KEY_FILE": str(tmp_path / "none")}
        )
