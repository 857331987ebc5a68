"""The `moderate` command line run as a real subprocess beside the test's event loop, and the image files
it is pointed at."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.images import make_png

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PASS_IMAGE = make_png(256, 256)


@dataclass(frozen=True)
class Run:
    status: int
    stdout: str
    stderr: str

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines()]


async def moderate(server: str, *args: str) -> Run:
    # The gateway serves on this test's event loop: the CLI must run beside it, never block it.
    # `moderate health` takes its own options after the word `health`.
    command = (
        [*args[:1], "--server", server, *args[1:]] if args[:1] == ("health",) else ["--server", server, *args]
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "moderation_client",
        *command,
        cwd=PROJECT_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return Run(process.returncode, stdout.decode(), stderr.decode())


def write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path
