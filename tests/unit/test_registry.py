"""Backend types are plug-ins: the registry is the only list of them, and service/ knows none."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field

from backends.base import Backend
from backends.options import BackendOptions, Secret
from backends.plugin import BackendType, BuildContext
from backends.registry import BACKEND_TYPES, backend_type, default_type
from service.factory import build_backends
from service.settings import load_settings


class EchoOptions(BackendOptions):
    colour: str = Field("blue", validation_alias="ECHO_COLOUR", description="a colour")
    password: Secret = Field(validation_alias="ECHO_PASSWORD", description="a password")


class EchoBackend:
    def __init__(self, name: str, options: EchoOptions) -> None:
        self.name, self.options = name, options


def build_echo(name: str, options: EchoOptions, context: BuildContext) -> Backend:
    return EchoBackend(name, options)  # type: ignore[return-value]


ECHO = BackendType(name="echo", summary="a test type", options=EchoOptions, build=build_echo)


@pytest.fixture
def echo_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKEND_TYPES, "echo", ECHO)


def test_every_type_declares_its_options_and_builds() -> None:
    for name, kind in BACKEND_TYPES.items():
        assert kind.name == name
        assert issubclass(kind.options, BackendOptions)
        assert kind.summary


def test_an_unknown_type_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="local, private, tencent"):
        backend_type("quantum")


def test_credentials_select_their_type_by_default() -> None:
    assert default_type({}) == "local"
    assert default_type({"TENCENTCLOUD_SECRET_KEY_FILE": "/run/key"}) == "tencent"


@pytest.mark.usefixtures("echo_registered")
def test_a_new_type_is_configured_from_the_environment_without_touching_service() -> None:
    settings = load_settings(
        {"MODERATION_BACKEND": "echo", "ECHO_COLOUR": "red", "ECHO_PASSWORD": "pw-123456"}
    )
    (backend,) = build_backends(settings)
    assert isinstance(backend, EchoBackend)
    assert (backend.name, backend.options.colour) == ("echo", "red")
    assert settings.secrets == ("pw-123456",)


@pytest.mark.usefixtures("echo_registered")
def test_a_new_type_is_configured_from_a_routing_file(tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text('[backends.a]\ntype = "echo"\npassword_env = "PW"\n[default]\nchain = ["a"]\n')
    settings = load_settings({"MODERATION_ROUTES": str(routes), "PW": "pw-654321"})
    (backend,) = build_backends(settings)
    assert isinstance(backend, EchoBackend)
    assert (backend.name, backend.options.colour) == ("a", "blue")
    assert settings.secrets == ("pw-654321",)
