"""Every Python and TOML example of the README and the docs runs, found by Sybil.

Python examples run as written, each in a process of its own, against a real gateway process on the IMS
emulator, in a folder holding the images they name (`cat.jpg`, `photos/`). TOML examples go through the
loader of what they configure: a routing file through the gateway's own `load_routes`, a policy through
`load_policy`, a deprecated local keyword library through `read_libraries`. Shell examples are not run here:
the container line runs in tests/test_deploy_image.py, the Secret lines are checked against the
manifests in tests/test_deploy_manifests.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sybil import Example, Sybil
from sybil.parsers.markdown import CodeBlockParser

from emulator import EmulatorConfig, ImsEmulator
from service.policy.legacy import read_libraries
from service.policy.loading import load_policy
from service.quotas.config import quotas_from_document
from service.routing_file import load_routes
from testbed.processes import free_port
from tests.support.example_files import write_example_files
from tests.support.gateway import SECRET_ID, SECRET_KEY
from tests.support.service_process import start_service

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# The variables the routing examples name with `*_env`.
ROUTE_SECRETS = {
    "TENCENTCLOUD_SECRET_ID": "AKIDexample",
    "TENCENTCLOUD_SECRET_KEY": "example-key",
    "ONPREM_SECRET_ID": "onprem-id",
    "ONPREM_SECRET_KEY": "onprem-key",
}


def run_python(example: Example) -> None:
    where = example.namespace["workdir"]
    env = {**os.environ, "MODERATION_SERVER": example.namespace["server"], "PYTHONPATH": str(ROOT)}
    ran = subprocess.run(
        [sys.executable, "-c", example.parsed], cwd=where, env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, f"{example.path}:{example.line}\n{ran.stderr}"
    assert ran.stdout.strip(), f"{example.path}:{example.line} printed nothing"


def with_local_files(text: str, folder: Path) -> str:
    """The example with every absolute path it names replaced by a file made under `folder`."""

    def local(match: re.Match[str]) -> str:
        path = folder / Path(match.group(1)).name
        path.write_text("stand-in\n")
        return f'"{path}"'

    return re.sub(r'"(/[^"]+)"', local, text)


def load_toml(example: Example) -> None:
    folder: Path = example.namespace["workdir"] / f"toml-{example.line}"
    folder.mkdir()
    text = with_local_files(example.parsed, folder)
    document: dict[str, Any] = tomllib.loads(text)
    if "quotas" in document:
        assert quotas_from_document(document)
    if "backends" in document:
        routes = load_routes(write(folder / "routes.toml", text), ROUTE_SECRETS)
        assert routes.backends
    elif "quotas" in document:
        return
    elif "words" in document:
        problems: list[str] = []
        (library,) = read_libraries(write(folder / "library.toml", text).parent, problems)
        assert (library.id, problems) == (document["id"], [])
    else:
        for kind, lists in ((k, document.get(k, {})) for k in ("keyword_lists", "image_lists")):
            for declared in lists.values():
                write_stand_in(folder / declared["file"], kind, declared.get("kind", ""))
        assert load_policy(write(folder / "policy.toml", text)).version


def write_stand_in(path: Path, kind: str, list_kind: str) -> None:
    """A list file of the right shape for a policy example that names it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = "example" if kind == "keyword_lists" else f"{'0f' * 32} example"
    path.write_text(entry + "\n")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


SYBIL = Sybil(parsers=[CodeBlockParser("python", run_python), CodeBlockParser("toml", load_toml)])
EXAMPLES = [(page, example) for page in PAGES for example in SYBIL.parse(page).examples()]


@pytest.fixture(scope="module")
def gateway_address() -> Iterator[str]:
    """A real gateway process on the emulator, SERVING."""
    config = EmulatorConfig(secret_id=SECRET_ID, secret_key=SECRET_KEY)
    with ImsEmulator(config, host="127.0.0.1", port=0) as emulator:
        port = free_port()
        # The async guide's receiver listens on loopback, over http, for callbacks signed so.
        process = start_service(
            emulator,
            port,
            MODERATION_WEBHOOK_SECRETS="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            MODERATION_CALLBACK_ALLOW_HTTP="on",
            MODERATION_CALLBACK_ALLOWED_NETWORKS="127.0.0.0/8",
        )
        address = f"127.0.0.1:{port}"
        try:
            with grpc.insecure_channel(address) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                # wait_for_ready: the call waits for the port to open instead of failing at once.
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=60, wait_for_ready=True)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
            yield address
        finally:
            process.terminate()
            process.communicate(timeout=30)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_example_files(tmp_path)
    return tmp_path


def test_the_examples_are_found() -> None:
    # A parser that stopped matching would leave nothing to run, and every test below would pass.
    pages = {page.name for page, _ in EXAMPLES}
    assert pages >= {"README.md", "client.md", "streaming.md", "routing.md", "local-backend.md"}


@pytest.mark.parametrize(
    ("page", "example"),
    EXAMPLES,
    ids=[f"{page.relative_to(ROOT)}:{example.line}" for page, example in EXAMPLES],
)
@pytest.mark.system
def test_the_example_runs(
    page: Path, example: Example, workdir: Path, request: pytest.FixtureRequest
) -> None:
    example.namespace["workdir"] = workdir
    if example.region.evaluator is run_python:
        example.namespace["server"] = request.getfixturevalue("gateway_address")
    example.evaluate()
