"""The installed gateway (the container image installs it, not editable) holds every package of the
source tree: a package left out of pyproject.toml's list imports in the checkout and fails in the image."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = ("service", "backends", "emulator", "client")


def test_every_source_package_is_installed() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in TOP_LEVEL
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"


def test_the_image_generates_code_with_the_pinned_grpcio_tools() -> None:
    # The Dockerfile's throwaway tool environment repeats the pin; generated code must match the runtime.
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    (pin,) = (spec for spec in dev if spec.startswith("grpcio-tools"))
    assert f"'{pin}'" in (ROOT / "Dockerfile").read_text()
