"""The emulator and the gateway as subprocesses whose every output line is kept in a file.

`testbed.processes` starts them for the other benchmarks but discards the gateway's stdout and deletes
its log when the gateway stops; the soak must scan both after the gateway has exited (its last spans
are flushed at shutdown), so it spawns them itself, reusing that module's pieces.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from testbed.processes import (
    REPO_ROOT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    Credentials,
    Running,
    free_port,
    stop_process,
    wait_until_serving,
)

# Inherited settings would silently change what is measured (as in testbed.processes).
_SETTING_PREFIXES = ("MODERATION_", "IMS_", "TENCENTCLOUD_", "OTEL_")


def _environment(settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTING_PREFIXES)}
    return {**env, **settings}


def _tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-20:])


@contextlib.contextmanager
def _spawn(name: str, module: list[str], env: dict[str, str], folder: Path) -> Iterator[Running]:
    """`python -m module`, stdout and stderr in `folder/<name>.stdout` and `.stderr`; stopped on exit
    with SIGTERM, as an orchestrator would, so the gateway's shutdown path runs too."""
    stdout, stderr = folder / f"{name}.stdout", folder / f"{name}.stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", *module], cwd=REPO_ROOT, env=env, stdout=out, stderr=err
        )
    try:
        yield Running(process, "", stderr)
    finally:
        stop_process(process)


@contextlib.contextmanager
def emulator(credentials: Credentials, arguments: list[str], folder: Path) -> Iterator[Running]:
    """The IMS emulator; the address of what it yields is its URL."""
    env = _environment(
        {"IMS_EMULATOR_SECRET_ID": credentials.secret_id, "IMS_EMULATOR_SECRET_KEY": credentials.secret_key}
    )
    module = ["emulator", "--port", "0", *arguments]
    with _spawn("emulator", module, env, folder) as started:
        marker = "listening on "
        deadline = time.monotonic() + START_TIMEOUT
        # Its one stdout line announces the URL (port 0: no race for a port picked here).
        while marker not in (line := (folder / "emulator.stdout").read_text()):
            if started.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the IMS emulator did not start:\n{_tail(started.log)}")
            time.sleep(0.05)
        yield Running(started.process, line.split(marker, 1)[1].strip(), started.log)


@contextlib.contextmanager
def gateway(
    credentials: Credentials, emulator_url: str, settings: dict[str, str], folder: Path
) -> Iterator[Running]:
    """`python -m service`, tencent backend against the emulator; yields once health is SERVING."""
    address = f"127.0.0.1:{free_port()}"
    env = _environment(
        {
            "MODERATION_LISTEN": address,
            "MODERATION_BACKEND": "tencent",
            "TENCENTCLOUD_SECRET_ID": credentials.secret_id,
            "TENCENTCLOUD_SECRET_KEY": credentials.secret_key,
            "IMS_ENDPOINT": emulator_url,
            # The soak sends a few images many times and counts billed calls per item: no cache.
            "MODERATION_CACHE": "off",
            **settings,
        }
    )
    with _spawn("gateway", ["service"], env, folder) as started:
        running = Running(started.process, address, started.log)
        wait_until_serving(running)
        yield running


def stop(running: Running) -> int:
    """SIGTERM and wait, as an orchestrator would; the exit status (0 is a clean shutdown)."""
    running.process.terminate()
    try:
        return running.process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        running.process.kill()
        running.process.wait()
        raise RuntimeError(f"the gateway did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM") from None
