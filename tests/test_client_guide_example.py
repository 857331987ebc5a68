"""The client guide's library example, run as written against the real gateway, answers as it should
(tests/test_docs_examples.py runs every example; this one's output is checked line by line)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from service.server import Gateway
from tests.support.example_files import write_example_files

ROOT = Path(__file__).resolve().parent.parent


def library_example() -> str:
    guide = (ROOT / "docs" / "guides" / "client.md").read_text()
    section = guide.split("\n## The Python client library\n", 1)[1]
    example = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[0]
    return str(example)


async def test_the_client_guide_example_answers_each_image(gateway: Gateway, tmp_path: Path) -> None:
    (tmp_path / "example.py").write_text(library_example())
    write_example_files(tmp_path)
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
