"""The client distribution (client/): built from the sources, installed alone into a fresh venv.

It must build its generated stubs from protos/ by itself (no `make`), depend only on grpcio, protobuf
and googleapis-common-protos (tqdm with the [cli] extra), and bring at most 10 packages. The build and
the installs go through pip and its index, as a user's would; pip's cache keeps a rerun quick.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT_SOURCES = shutil.ignore_patterns("generated", "build", "*.egg-info", "__pycache__", "*_pb2*")
# Nothing from the checkout may leak into the fresh venv's imports.
ENV = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


def run(*command: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def build_wheel(tmp_path: Path) -> Path:
    """A wheel built from a copy of client/ and protos/ with no generated file in it."""
    sources = tmp_path / "sources"
    shutil.copytree(ROOT / "client", sources / "client", ignore=NOT_SOURCES)
    shutil.copytree(ROOT / "protos" / "moderation", sources / "protos" / "moderation", ignore=NOT_SOURCES)
    wheels = tmp_path / "wheels"
    built = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "-w",
        wheels,
        sources / "client",
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("moderation_client-*.whl")
    return wheel


def closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def test_the_client_builds_installs_alone_in_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "moderation/v1/moderation_service_pb2_grpc.py" in names
    # The client and its stubs only: nothing of the gateway's.
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == {
        "moderation",
        "moderation_client",
    }

    environment = tmp_path / "venv"
    venv.create(environment, with_pip=False)  # nothing in it but what the client brings
    python, moderate = environment / "bin" / "python", environment / "bin" / "moderate"

    def install(requirement: str) -> None:
        done = run(
            sys.executable, "-m", "pip", "--python", python, "install", "--quiet", requirement, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr

    # The library and the health probe need no extra.
    install(str(wheel))
    imports = (
        "import sys, moderation_client, moderation.v1.moderation_service_pb2_grpc, moderation_client.cli\n"
    )
    imports += "print('tqdm' in sys.modules)"
    imported = run(python, "-c", imports, cwd=tmp_path)
    assert (imported.returncode, imported.stdout) == (0, "False\n"), imported.stderr
    health = run(moderate, "health", "--server", closed_port(), cwd=tmp_path)
    assert health.returncode == 4, health.stderr
    assert "UNAVAILABLE" in health.stderr

    install(f"{wheel}[cli]")
    listing = (
        "import importlib.metadata as m; print(*(d.metadata['Name'].lower() for d in m.distributions()))"
    )
    installed = run(python, "-c", listing, cwd=tmp_path).stdout.split()
    assert len(installed) <= 10, installed
    assert {"moderation-client", "grpcio", "protobuf", "googleapis-common-protos", "tqdm"} <= set(installed)
    helped = run(moderate, "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "moderate health" in helped.stdout
