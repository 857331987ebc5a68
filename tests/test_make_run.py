"""`make run` serves on loopback unless MODERATION_LISTEN says otherwise: the recipe runs here with a
stand-in interpreter that reports what the gateway would be given (the environment is not rebuilt)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.make_targets import ROOT, run_make, write_program

REPORT = """#!/bin/sh
exec python3 -c 'import json, os, sys; env = os.environ.get; print(json.dumps({"argv": sys.argv[1:],
  "listen": env("MODERATION_LISTEN"), "metrics": env("MODERATION_METRICS_LISTEN")}))' "$@"
"""


def make_run(tmp_path: Path, **env: str) -> dict[str, object]:
    fake = tmp_path / "bin"
    fake.mkdir()
    write_program(fake / "python", REPORT)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MODERATION_")} | env
    # -o: the environment and the generated code count as made, whatever their age.
    generated = [str(p.relative_to(ROOT)) for p in ROOT.glob("protos/moderation/v1/*_pb2.py")]
    old = [arg for path in (".venv/.runtime", *generated) for arg in ("-o", path)]
    output = run_make("-s", *old, "run", f"BIN={fake}", env=environ)
    report: dict[str, object] = json.loads(output)
    return report


def test_make_run_serves_on_loopback_by_default(tmp_path: Path) -> None:
    report = make_run(tmp_path)
    assert report["argv"] == ["-m", "service"]
    assert (report["listen"], report["metrics"]) == ("127.0.0.1:50051", "127.0.0.1:9464")


@pytest.mark.parametrize("listen", ["[::]:50051", "0.0.0.0:6000"])
def test_moderation_listen_says_otherwise(tmp_path: Path, listen: str) -> None:
    report = make_run(tmp_path, MODERATION_LISTEN=listen, MODERATION_METRICS_LISTEN="off")
    assert (report["listen"], report["metrics"]) == (listen, "off")
