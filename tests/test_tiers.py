"""The tiers as pytest selects them (`make test-fast` is `-m unit`): tests/conftest.py puts each test in
one, by directory, by module or by the test's own mark."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("tests/unit/test_codes.py", "tests/test_make_run.py", "tests/test_server.py")


def selected(tier: str) -> set[str]:
    """The node ids of MODULES' tests that `-m tier` selects."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            tier,
            *MODULES,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return {line for line in done.stdout.splitlines() if "::" in line}


@pytest.fixture(scope="module")
def tiers() -> dict[str, set[str]]:
    return {tier: selected(tier) for tier in ("unit", "integration", "system")}


def test_each_test_is_in_one_tier(tiers: dict[str, set[str]]) -> None:
    unit, integration, system = tiers["unit"], tiers["integration"], tiers["system"]
    assert all(tiers.values())
    assert len(unit | integration | system) == len(unit) + len(integration) + len(system)
    assert all(test.startswith("tests/unit/") for test in unit)


def test_a_system_module_and_a_systems_own_mark_select_it(tiers: dict[str, set[str]]) -> None:
    system = tiers["system"]
    assert {test for test in system if test.startswith("tests/test_make_run.py")}
    assert "tests/test_server.py::test_port_clash_exits_with_a_message" in system
    assert "tests/test_server.py::test_port_clash_fails_loudly" in tiers["integration"]


def test_a_test_carries_its_tiers_mark_and_timeout(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("integration") is not None
    timeout = request.node.get_closest_marker("timeout")
    assert timeout is not None
    assert timeout.args == (120,)  # tests/conftest.py's TIER_TIMEOUTS["integration"]


@pytest.mark.timeout(7)
def test_a_tests_own_timeout_outranks_its_tiers(request: pytest.FixtureRequest) -> None:
    timeout = request.node.get_closest_marker("timeout")
    assert timeout is not None
    assert timeout.args == (7,)
