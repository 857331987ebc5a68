"""The IMS emulator and the gateway as real subprocesses on loopback: started ready, always stopped."""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parent.parent
EMULATOR_LATENCY = 0.8
BUDGET_QPS = 100
START_TIMEOUT = 30.0
# The gateway's shutdown grace is 20 s by default; a stopped bench leaves nothing in flight, so more
# than that means it hangs.
STOP_TIMEOUT = 25.0
# Inherited settings would silently change what is measured: every run uses the gateway's defaults.
_SETTING_PREFIXES = ("MODERATION_", "IMS_", "TENCENTCLOUD_")


@dataclass(frozen=True)
class Credentials:
    secret_id: str
    secret_key: str

    @classmethod
    def fresh(cls) -> Credentials:
        return cls("AKID" + secrets.token_hex(16), secrets.token_hex(20))


@dataclass(frozen=True)
class Running:
    process: subprocess.Popen[bytes]
    # host:port for the gateway, the base URL for the emulator.
    address: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # utime and stime are fields 14 and 15 of stat(5); the split above starts at field 3.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def status_bytes(self, field: str) -> int:
        """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM, ...) in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == field:
                return int(value.split()[0]) * 1024
        raise KeyError(field)


def _environment(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTING_PREFIXES)}
    env.update(settings)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _failed_start(what: str, log: Path, reason: str) -> RuntimeError:
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    return RuntimeError(f"{what} did not start: {reason}\n--- its log ---\n{tail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def _spawn(
    module: list[str], env: dict[str, str], *, stdout: int
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`python -m module` from the repository root, its stderr in a temporary log file."""
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        log = Path(folder) / "stderr.log"
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", *module], cwd=REPO_ROOT, env=env, stdout=stdout, stderr=log_file
            )
        try:
            yield process, log
        finally:
            _stop(process)


def _read_line(stream: IO[bytes], timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline().decode(errors="replace").strip() if ready else ""


@contextlib.contextmanager
def emulator(credentials: Credentials) -> Iterator[Running]:
    """`python -m tests.ims_emulator` with IMS's latency and limit; its address is its URL."""
    env = _environment(
        IMS_EMULATOR_SECRET_ID=credentials.secret_id, IMS_EMULATOR_SECRET_KEY=credentials.secret_key
    )
    # Port 0 and the announced URL, rather than a port picked here: no race for the port.
    module = ["tests.ims_emulator", "--port", "0", "--latency", str(EMULATOR_LATENCY)]
    with _spawn([*module, "--qps", str(BUDGET_QPS)], env, stdout=subprocess.PIPE) as (process, log):
        assert process.stdout is not None
        line = _read_line(process.stdout, START_TIMEOUT)
        marker = "listening on "
        if marker not in line:
            raise _failed_start("the IMS emulator", log, f"it printed {line!r}")
        yield Running(process, line.split(marker, 1)[1], log)


@contextlib.contextmanager
def gateway(credentials: Credentials, emulator_url: str) -> Iterator[Running]:
    """`python -m service` against the emulator, with default settings; yields once health is SERVING."""
    address = f"127.0.0.1:{_free_port()}"
    env = _environment(
        MODERATION_LISTEN=address,
        MODERATION_BACKEND="tencent",
        MODERATION_METRICS_LISTEN="off",
        TENCENTCLOUD_SECRET_ID=credentials.secret_id,
        TENCENTCLOUD_SECRET_KEY=credentials.secret_key,
        IMS_ENDPOINT=emulator_url,
        IMS_QPS=str(BUDGET_QPS),
    )
    with _spawn(["service"], env, stdout=subprocess.DEVNULL) as (process, log):
        started = Running(process, address, log)
        _wait_until_serving(started)
        yield started


def _wait_until_serving(started: Running) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    request = health_pb2.HealthCheckRequest(service="")
    with grpc.insecure_channel(started.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if started.process.poll() is not None:
                raise _failed_start("the gateway", started.log, f"exit status {started.process.returncode}")
            try:
                if stub.Check(request, timeout=1.0).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise _failed_start("the gateway", started.log, f"not SERVING within {START_TIMEOUT:.0f} s")
