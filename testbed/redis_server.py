"""Debian's `redis-server` as a subprocess on 127.0.0.1: a free port, a temporary directory, no
persistence, so a restart comes back empty (or, `durable`, an append-only file synced on every write, so
a restart comes back with everything). `make system-deps` installs it."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from testbed.processes import free_port, stop_process

START_TIMEOUT = 10.0
# Nothing saved, so a restart is empty.
EPHEMERAL = ("--save", "", "--appendonly", "no")
DURABLE = ("--save", "", "--appendonly", "yes", "--appendfsync", "always")


class RedisServer:
    def __init__(self, folder: Path, port: int, *, durable: bool = False) -> None:
        self.port = port
        self._folder = folder
        self._persistence = DURABLE if durable else EPHEMERAL
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (again, on the same port, empty unless durable): returns once it accepts connections."""
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError(
                "redis-server is not installed: run `make system-deps` (Debian's redis-server)"
            )
        log = (self._folder / "redis.log").open("ab")
        self._process = subprocess.Popen(
            [
                executable,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self._folder),
                *self._persistence,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with status {self._process.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer within {START_TIMEOUT:.0f} s")

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None


@contextlib.contextmanager
def redis_server(*, durable: bool = False) -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="redis-") as folder:
        server = RedisServer(Path(folder), free_port(), durable=durable)
        server.start()
        try:
            yield server
        finally:
            server.stop()
