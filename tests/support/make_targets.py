"""Running the Makefile's targets for real in the tests, with stand-in programs where a target would
build or install something heavy."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def write_program(path: Path, script: str) -> Path:
    path.write_text(script)
    path.chmod(0o755)
    return path


def run_make(*args: str, env: Mapping[str, str]) -> str:
    """The target's stdout; CalledProcessError when it fails."""
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
