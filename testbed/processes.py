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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parent.parent
EMULATOR_LATENCY = 0.8
BUDGET_QPS = 100
START_TIMEOUT = 30.0
# The gateway's shutdown grace is 20 s by default; a stopped bench leaves nothing in flight, so more
# than that means it hangs.
STOP_TIMEOUT = 25.0
# Inherited settings would silently change what is measured: every run uses the gateway's defaults,
# tracing included, plus only what a phase sets itself.
_SETTING_PREFIXES = ("MODERATION_", "IMS_", "TENCENTCLOUD_", "OTEL_")
# Where a process's output is kept after it stops (a folder, and the name its files take), for a run
# that scans it afterwards; None: a temporary log, deleted with the process.
Output = tuple[Path, str] | None


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
    # host:port for the gateway, the base URL for the emulator, the module for a worker.
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
        return status_bytes(self.pid, field)


def status_bytes(pid: int, field: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM, ...) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0]) * 1024
    raise KeyError(field)


def _environment(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTING_PREFIXES)}
    env.update(settings)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn_service(port: int, **settings: str) -> subprocess.Popen[str]:
    """`python -m service` on `port` with only `settings` (and PATH) in its environment; the verdict
    cache off unless `settings` turn it on (most tests count the backend's calls of one image)."""
    return spawn_module("service", port, settings, subprocess.PIPE)


def spawn_module(
    module: str, port: int, settings: Mapping[str, str], output: IO[str] | int
) -> subprocess.Popen[str]:
    """`python -m module` (the service, or a test's launcher of it) as `spawn_service` says; its output
    piped, or written to the file `output`."""
    return subprocess.Popen(
        [sys.executable, "-m", module],
        env={
            "PATH": os.environ["PATH"],
            "MODERATION_LISTEN": f"127.0.0.1:{port}",
            "MODERATION_CACHE": "off",
            **settings,
        },
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _failed(what: str, log: Path, reason: str) -> RuntimeError:
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    return RuntimeError(f"{what}: {reason}\n--- its log ---\n{tail}")


def _failed_start(what: str, log: Path, reason: str) -> RuntimeError:
    return _failed(f"{what} did not start", log, reason)


def stop_process(process: subprocess.Popen[Any]) -> int:
    """SIGTERM, as an orchestrator would, then SIGKILL if the process is still there after STOP_TIMEOUT;
    its exit status (0 for a clean shutdown, negative for the signal that ended it)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@contextlib.contextmanager
def _spawn(
    module: list[str],
    env: dict[str, str],
    *,
    stdout: int,
    stdin: int | None = None,
    root: Path = REPO_ROOT,
    output: Output = None,
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`python -m module` from `root` (by default this repository), its stderr in a temporary log file,
    or with `output` (a folder and a name) its stdout and stderr kept there as <name>.stdout and .stderr.
    Another tree's modules, its generated protos included, come before the editable install's."""
    if root != REPO_ROOT:
        env = {**env, "PYTHONPATH": os.pathsep.join([str(root), str(root / "protos")])}
    with contextlib.ExitStack() as stack:
        if output is None:
            log = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-"))) / "stderr.log"
            kept_stdout = None
        else:
            folder, name = output
            log, kept_stdout = folder / f"{name}.stderr", folder / f"{name}.stdout"
        with log.open("wb") as log_file, contextlib.ExitStack() as files:
            out = stdout if kept_stdout is None else files.enter_context(kept_stdout.open("wb"))
            process = subprocess.Popen(
                [sys.executable, "-m", *module], cwd=root, env=env, stdin=stdin, stdout=out, stderr=log_file
            )
        try:
            yield process, log
        finally:
            stop_process(process)


def _read_line(stream: IO[bytes], timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline().decode(errors="replace").strip() if ready else ""


@dataclass(frozen=True)
class Worker(Running):
    """A subprocess that answers each line on its stdin with one line on its stdout."""

    def ask(self, line: str, timeout: float) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()
        return self.read(timeout)

    def read(self, timeout: float) -> str:
        assert self.process.stdout is not None
        answer = _read_line(self.process.stdout, timeout)
        if not answer:
            raise _failed(self.address, self.log, f"no answer within {timeout:.0f} s")
        return answer


@contextlib.contextmanager
def worker(module: list[str], expect: str, **settings: str) -> Iterator[Worker]:
    """`python -m module` with default settings but `settings`; yields once it printed `expect`."""
    with _spawn(module, _environment(**settings), stdout=subprocess.PIPE, stdin=subprocess.PIPE) as (
        process,
        log,
    ):
        started = Worker(process, module[0], log)
        line = started.read(START_TIMEOUT)
        if line != expect:
            raise _failed_start(started.address, log, f"it printed {line!r}")
        yield started


@contextlib.contextmanager
def emulator(
    credentials: Credentials,
    *,
    latency: float = EMULATOR_LATENCY,
    qps: int | None = BUDGET_QPS,
    read_ink: bool = False,
    arguments: Sequence[str] = (),
) -> Iterator[Running]:
    """`python -m emulator`, by default with IMS's latency and limit (`qps=None`: no limit), and its
    other command-line `arguments` (faults, jitter); its address is its URL. `read_ink`: magenta pixels
    read as ad text (`emulator.ink`)."""
    env = _environment(
        IMS_EMULATOR_SECRET_ID=credentials.secret_id, IMS_EMULATOR_SECRET_KEY=credentials.secret_key
    )
    # Port 0 and the announced URL, rather than a port picked here: no race for the port.
    module = ["emulator", "--port", "0", "--latency", str(latency)]
    if qps is not None:
        module += ["--qps", str(qps)]
    if read_ink:
        module.append("--read-ink")
    module += arguments
    with _spawn(module, env, stdout=subprocess.PIPE) as (process, log):
        assert process.stdout is not None
        line = _read_line(process.stdout, START_TIMEOUT)
        marker = "listening on "
        if marker not in line:
            raise _failed_start("the IMS emulator", log, f"it printed {line!r}")
        yield Running(process, line.split(marker, 1)[1], log)


@contextlib.contextmanager
def gateway(credentials: Credentials, emulator_url: str, **settings: str) -> Iterator[Running]:
    """The gateway's tencent backend against the emulator, with default settings but `settings`."""
    with tree_gateway(REPO_ROOT, credentials, emulator_url, settings) as started:
        yield started


@contextlib.contextmanager
def tree_gateway(
    root: Path,
    credentials: Credentials,
    emulator_url: str,
    settings: Mapping[str, str],
    *,
    output: Output = None,
) -> Iterator[Running]:
    """`gateway`, run from the source tree at `root` (another revision's: see bench.source_tree); its
    output kept as `output` says."""
    tencent = {
        "MODERATION_BACKEND": "tencent",
        "TENCENTCLOUD_SECRET_ID": credentials.secret_id,
        "TENCENTCLOUD_SECRET_KEY": credentials.secret_key,
        "IMS_ENDPOINT": emulator_url,
        "IMS_QPS": str(BUDGET_QPS),
    }
    with tree_serve(root, {**tencent, **settings}, output=output) as started:
        yield started


@contextlib.contextmanager
def serve(**settings: str) -> Iterator[Running]:
    """`python -m service` with default settings but `settings`; yields once health is SERVING. The
    verdict cache is off unless `settings` turn it on: the other sections send one image many times
    and measure the backend's calls."""
    with tree_serve(REPO_ROOT, settings) as started:
        yield started


@contextlib.contextmanager
def tree_serve(root: Path, settings: Mapping[str, str], *, output: Output = None) -> Iterator[Running]:
    """`serve`, run from the source tree at `root`; its output kept as `output` says."""
    address = f"127.0.0.1:{free_port()}"
    defaults = {"MODERATION_LISTEN": address, "MODERATION_METRICS_LISTEN": "off", "MODERATION_CACHE": "off"}
    env = _environment(**{**defaults, **settings})
    with _spawn(["service"], env, stdout=subprocess.DEVNULL, root=root, output=output) as (process, log):
        started = Running(process, address, log)
        wait_until_serving(started)
        yield started


def wait_until_serving(started: Running) -> None:
    """Returns once the gateway's health says SERVING; raises, with its log's tail, if it exits or is slow."""
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
