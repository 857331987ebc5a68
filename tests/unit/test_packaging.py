"""The installed gateway (the container image installs it, not editable) holds every package of the
source tree: a package left out of pyproject.toml's list imports in the checkout and fails in the image."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The client is a distribution of its own (client/pyproject.toml; tests/test_client_package.py).
TOP_LEVEL = ("service", "backends", "emulator")


def test_every_source_package_is_installed() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in TOP_LEVEL
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"


def test_every_generator_of_the_stubs_is_pinned_to_the_runtimes_grpcio() -> None:
    # The client's build makes the shipped stubs and `make` the typing stubs: both with grpcio-tools of
    # the minor version of the grpcio they run on, since generated code refuses an older runtime.
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    client = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())

    def bounds(specs: list[str], name: str) -> str:
        (spec,) = (spec for spec in specs if spec.split("[")[0].split(">")[0].split("=")[0] == name)
        return spec.removeprefix(name)

    runtime = bounds(client["project"]["dependencies"], "grpcio")
    assert bounds(root["project"]["dependencies"], "grpcio") == runtime
    assert bounds(client["build-system"]["requires"], "grpcio-tools") == runtime
    assert bounds(root["project"]["optional-dependencies"]["dev"], "grpcio-tools") == runtime
