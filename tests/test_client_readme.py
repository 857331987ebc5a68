"""The README's client library example, run as written against the real gateway."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from emulator.images import make_jpeg, make_png
from service.server import Gateway

ROOT = Path(__file__).resolve().parent.parent


def readme_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Python client library\n", 1)[1].split("\n## ", 1)[0]
    [example] = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    return str(example)


async def test_the_readme_example_runs(gateway: Gateway, tmp_path: Path) -> None:
    (tmp_path / "example.py").write_text(readme_example())
    (tmp_path / "cat.jpg").write_bytes(make_jpeg(256, 256))
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(make_jpeg(300, 200))
    (photos / "b.jpg").write_bytes(make_png(256, 256, marker="IMSEMU:Block:Porn:SexBehavior:97"))
    (photos / "c.jpg").write_bytes(b"too small")
    env = {**os.environ, "MODERATION_SERVER": f"127.0.0.1:{gateway.port}", "PYTHONPATH": str(ROOT)}
    # The gateway serves on this test's event loop: the example must run beside it, never block it.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "example.py",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    lines = sorted(line.split()[:3] for line in stdout.decode().splitlines())
    assert lines == [
        ["cat.jpg", "SUGGESTION_PASS", "Normal"],
        ["photos/a.jpg", "SUGGESTION_PASS", "Normal"],
        ["photos/b.jpg", "SUGGESTION_BLOCK", "Porn"],
        ["photos/c.jpg", "INVALID_ARGUMENT", "IMAGE_TOO_SMALL"],
    ]
