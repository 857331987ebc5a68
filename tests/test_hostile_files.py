"""Files that are not files, through real gateway processes (`python -m service`): a FIFO, `/dev/zero`
or a deeply nested TOML where the configuration names a file.

At start-up each is a configuration problem (exit status 2, every problem listed, no traceback, no
hang); a watched key file swapped for one is a failed refresh (logged, counted) that neither grows the
process's memory nor holds up its exit on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from moderation.v1.moderation_service_pb2 import ModerateImageRequest

from emulator import EmulatorConfig, ImsEmulator
from testbed.processes import free_port, spawn_service
from tests.support.credential_gateway import gateway, metric
from tests.support.credentials import OLD_ID, OLD_KEY, PNG, write_secret_dir
from tests.support.eventually import eventually

# A start-up that reads a FIFO waits forever: this bounds the test, not the gateway's start.
START_UP_SECONDS = 30


def start_up_failure(tmp_path: Path, **settings: str) -> str:
    """What the gateway printed, having exited with status 2 (the test fails on a hang or another status)."""
    process = spawn_service(free_port(), HOME=str(tmp_path), MODERATION_METRICS_LISTEN="off", **settings)
    try:
        output, _ = process.communicate(timeout=START_UP_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 2, output
    assert "Traceback" not in output
    return output


def test_fifo_and_dev_zero_as_key_and_url_files_exit_2_listing_every_problem(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "secret_id")
    os.mkfifo(tmp_path / "redis_url")
    output = start_up_failure(
        tmp_path,
        TENCENTCLOUD_SECRET_ID_FILE=str(tmp_path / "secret_id"),
        TENCENTCLOUD_SECRET_KEY_FILE="/dev/zero",
        MODERATION_REDIS_URL_FILE=str(tmp_path / "redis_url"),
        MODERATION_CACHE="redis",
    )
    assert (
        "TENCENTCLOUD_SECRET_ID: cannot read TENCENTCLOUD_SECRET_ID_FILE (not a regular file but a FIFO)"
        in output
    )
    assert (
        "TENCENTCLOUD_SECRET_KEY: cannot read TENCENTCLOUD_SECRET_KEY_FILE (not a regular file but a "
        "character device)"
    ) in output
    assert (
        "MODERATION_REDIS_URL: cannot read MODERATION_REDIS_URL_FILE (not a regular file but a FIFO)"
        in output
    )


def _fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "routes.toml")
    return tmp_path / "routes.toml"


def _deeply_nested(tmp_path: Path) -> Path:
    # Well under the file's size cap, far past what a recursive TOML parser can descend.
    path = tmp_path / "routes.toml"
    path.write_text("[default]\nchain = " + "[" * 50_000 + "]" * 50_000 + "\n")
    return path


@pytest.mark.parametrize(
    ("routes", "problem"),
    [
        (_fifo, "MODERATION_ROUTES: cannot read the file (not a regular file but a FIFO)"),
        (lambda _: Path("/dev/zero"), "cannot read the file (not a regular file but a character device)"),
        (_deeply_nested, "MODERATION_ROUTES: nested too deeply"),
    ],
    ids=["fifo", "dev_zero", "deeply_nested"],
)
def test_a_routing_file_that_cannot_be_loaded_exits_2(
    tmp_path: Path, routes: Callable[[Path], Path], problem: str
) -> None:
    output = start_up_failure(tmp_path, MODERATION_ROUTES=str(routes(tmp_path)))
    assert problem in output


def test_a_routed_secret_file_that_is_a_fifo_exits_2(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "key")
    routes = tmp_path / "routes.toml"
    routes.write_text(
        '[backends.cloud]\ntype = "tencent"\nsecret_id_env = "ID"\n'
        f'secret_key_file = "{tmp_path / "key"}"\n[default]\nchain = ["cloud"]\n'
    )
    output = start_up_failure(tmp_path, MODERATION_ROUTES=str(routes), ID=OLD_ID)
    assert (
        "[backends.cloud] secret_key: cannot read secret_key_file (not a regular file but a FIFO)" in output
    )


@pytest.mark.parametrize(
    ("variable", "file", "problem"),
    [
        ("MODERATION_LOCAL_DENY_DIR", "x.png", "the deny library's sample {}: not a regular file but a FIFO"),
        ("MODERATION_LOCAL_KEYWORDS", "ads.toml", "{}: not a regular file but a FIFO"),
    ],
    ids=["deny_sample", "keyword_library"],
)
def test_a_local_library_file_that_is_a_fifo_exits_2(
    tmp_path: Path, variable: str, file: str, problem: str
) -> None:
    library = tmp_path / "library"
    library.mkdir()
    os.mkfifo(library / file)
    output = start_up_failure(tmp_path, MODERATION_BACKEND="local", **{variable: str(library)})
    assert problem.format(library / file) in output


# --- a watched key file swapped at run time -----------------------------------------------------


def swap_secret_key(root: Path, make: Callable[[Path], None]) -> None:
    """As the kubelet swaps a Secret: a new version directory whose secret_key `make` creates."""
    version = root / f"..{time.monotonic_ns()}"
    version.mkdir()
    (version / "secret_id").write_text(OLD_ID + "\n")
    make(version / "secret_key")
    staging = root / "..data_tmp"
    staging.symlink_to(version.name)
    os.replace(staging, root / "..data")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_a_key_file_swapped_for_dev_zero_then_a_fifo_is_refused_and_sigterm_still_exits(
    tmp_path: Path,
) -> None:
    secrets = tmp_path / "secret"
    secrets.mkdir()
    write_secret_dir(secrets, OLD_ID, OLD_KEY)
    refused = (
        "refreshing the credentials of backend tencent from the file source failed: "
        "cannot read the secret key file"
    )
    with ImsEmulator(EmulatorConfig(secret_id=OLD_ID, secret_key=OLD_KEY, latency=0.01)) as ims:
        async with gateway(
            tmp_path,
            TENCENTCLOUD_SECRET_ID_FILE=str(secrets / "secret_id"),
            TENCENTCLOUD_SECRET_KEY_FILE=str(secrets / "secret_key"),
            IMS_ENDPOINT=ims.url,
        ) as (process, stub):
            pid = process.process.pid
            await stub.ModerateImage(ModerateImageRequest(content=PNG), timeout=5)
            before = rss_bytes(pid)

            swap_secret_key(secrets, lambda path: path.symlink_to("/dev/zero"))
            # The first refusal and the retry after its backoff: read again, refused again.
            dev_zero = f"{refused} (not a regular file but a character device)"
            await eventually(lambda: process.output.count(dev_zero) >= 2, within=15)
            grown = rss_bytes(pid) - before
            # The key held still signs.
            await stub.ModerateImage(ModerateImageRequest(content=PNG), timeout=5)

            swap_secret_key(secrets, os.mkfifo)
            await eventually(
                lambda: f"{refused} (not a regular file but a FIFO)" in process.output, within=15
            )
            await stub.ModerateImage(ModerateImageRequest(content=PNG), timeout=5)
            metrics = await process.metrics()

            process.process.terminate()
            stopping = time.monotonic()
            await asyncio.to_thread(process.process.wait, 10)
            stopped_in = time.monotonic() - stopping
    assert process.process.returncode == 0, process.output
    assert stopped_in < 5
    # Reading /dev/zero grew the process by over a GB within 1.5 s; refusing it reads nothing.
    assert grown < 20 * 1024 * 1024
    assert metric(metrics, "moderation_credentials_failures_total", "file") >= 3
    assert ims.stats.billed == 3
    assert OLD_KEY not in process.output + metrics
