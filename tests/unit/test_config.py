"""Settings from the environment: defaults, files for secrets, and clear refusals that hide values."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.local.settings import LocalSettings
from backends.registry import BACKEND_TYPES
from backends.tencent.plugin import TencentOptions
from service.settings import ConfigError, Settings, load_settings

CREDENTIALS = {"TENCENTCLOUD_SECRET_ID": "AKIDtestid", "TENCENTCLOUD_SECRET_KEY": "s3cr3t-key-value"}


def tencent_options(settings: Settings) -> TencentOptions:
    (backend,) = settings.backends
    assert isinstance(backend.options, TencentOptions)
    return backend.options


def test_defaults() -> None:
    settings = load_settings(CREDENTIALS)
    assert settings.listen == "[::]:50051"
    assert settings.backend == "tencent"
    assert settings.backend_timeout == 15.0
    assert settings.shutdown_grace >= 15.0
    assert settings.metrics_listen == "[::]:9464"
    options = tencent_options(settings)
    assert (options.qps, options.max_attempts, options.budget_key) == (100, 3, None)
    assert options.region == "ap-guangzhou"
    assert options.endpoint == "https://ims.tencentcloudapi.com/"
    assert options.credentials.token == ""


def test_no_credentials_means_the_embedded_backend() -> None:
    settings = load_settings({})
    assert settings.backend == "local"
    assert [(b.name, b.type) for b in settings.backends] == [("local", "local")]


def test_a_credentials_file_alone_selects_tencent(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("k")
    env = {"TENCENTCLOUD_SECRET_ID_FILE": str(tmp_path / "key"), "TENCENTCLOUD_SECRET_KEY": "k2"}
    assert load_settings(env).backend == "tencent"


def test_tencent_without_credentials_names_the_variables_to_set() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"MODERATION_BACKEND": "tencent"})
    assert caught.value.problems == [
        "TENCENTCLOUD_SECRET_ID: is required",
        "TENCENTCLOUD_SECRET_KEY: is required",
    ]


def test_local_settings(tmp_path: Path) -> None:
    settings = load_settings(
        {"MODERATION_LOCAL_KEYWORDS": str(tmp_path), "MODERATION_FETCH_ALLOW_NETWORKS": "127.0.0.0/8, ::1"}
    )
    (backend,) = settings.backends
    assert isinstance(backend.options, LocalSettings)
    assert backend.options.keyword_dir == tmp_path
    assert [str(n) for n in backend.options.fetch.allowed_networks] == ["127.0.0.0/8", "::1/128"]
    with pytest.raises(ConfigError, match="MODERATION_LOCAL_ALLOW_DIR"):
        load_settings({"MODERATION_LOCAL_ALLOW_DIR": str(tmp_path / "missing")})


def test_secrets_from_files_and_variables_are_read_alike(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("from-a-file\n")
    settings = load_settings(
        {
            "TENCENTCLOUD_SECRET_ID": " AKIDtestid\t",
            "TENCENTCLOUD_SECRET_KEY_FILE": str(tmp_path / "key"),
            "TENCENTCLOUD_TOKEN": "tok",
        }
    )
    credentials = tencent_options(settings).credentials
    assert (credentials.secret_id, credentials.secret_key, credentials.token) == (
        "AKIDtestid",
        "from-a-file",
        "tok",
    )
    assert set(settings.secrets) == {"AKIDtestid", "from-a-file", "tok"}
    assert "from-a-file" not in repr(settings)


def test_every_problem_is_reported_without_any_value() -> None:
    env = {
        "TENCENTCLOUD_SECRET_ID": "AKIDtestid",
        "TENCENTCLOUD_SECRET_KEY": "padded-secret",
        "IMS_MAX_ATTEMPTS": "many",
        "IMS_REGION": "Guangzhou!",
        "IMS_ENDPOINT": "https://AKIDuser:hunter2secret@ims.example",
        "MODERATION_LISTEN": "nowhere",
        "MODERATION_SHUTDOWN_GRACE": "5",
        "MODERATION_BACKEND_TIMEOUT": "60",
        "MODERATION_LOG_LEVEL": "hunter3secret",
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    text = str(caught.value)
    for name in (
        "IMS_MAX_ATTEMPTS",
        "IMS_REGION",
        "IMS_ENDPOINT",
        "MODERATION_LISTEN",
        "MODERATION_SHUTDOWN_GRACE",
        "MODERATION_BACKEND_TIMEOUT",
        "MODERATION_LOG_LEVEL",
    ):
        assert name in text
    assert len(caught.value.problems) == 7
    for value in (v for v in env.values() if len(v) > 4):  # short numbers appear in the bounds
        assert value not in text, value
    assert "hunter2secret" not in text


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {"TENCENTCLOUD_SECRET_ID": "AKIDtestid", "TENCENTCLOUD_SECRET_KEY_FILE": str(tmp_path / "key")}
        )
    assert caught.value.problems == ["TENCENTCLOUD_SECRET_KEY: is empty"]


def test_unknown_backend_names_the_known_types() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**CREDENTIALS, "MODERATION_BACKEND": "magic"})
    (problem,) = caught.value.problems
    assert problem.startswith("MODERATION_BACKEND:")
    assert all(name in problem for name in BACKEND_TYPES)


def test_a_type_for_routing_files_only_says_so() -> None:
    with pytest.raises(ConfigError, match="routing file"):
        load_settings({"MODERATION_BACKEND": "private"})


def test_unreadable_secret_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TENCENTCLOUD_SECRET_KEY_FILE"):
        load_settings(
            {"TENCENTCLOUD_SECRET_ID": "AKIDtestid", "TENCENTCLOUD_SECRET_KEY_FILE": str(tmp_path / "none")}
        )


def test_tls_files_go_together(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("x")
    with pytest.raises(ConfigError, match="MODERATION_TLS_KEY_FILE go together"):
        load_settings({"MODERATION_TLS_CERT_FILE": str(tmp_path / "cert.pem")})


def test_settings_built_in_code_never_read_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODERATION_MAX_IN_FLIGHT", "7")
    assert Settings().max_in_flight == 512
    assert load_settings().max_in_flight == 7
