"""deploy/prometheus/alerts.yaml, checked and unit-tested by Debian's promtool (alerts.test.yaml: each
alert fires on the failure it names, and stays quiet below its threshold)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
# What operators are promised an alert for (the list), by alert name.
ALERTS = {
    "ModerationBudgetSaturated",
    "ModerationBudgetRejections",
    "ModerationUpstreamThrottled",
    "ModerationErrorRatioHigh",
    "ModerationCircuitOpen",
    "ModerationRedisFallback",
    "ModerationCacheHitRatioDropped",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=RULES, capture_output=True, text=True, timeout=120)


@pytest.mark.system
def test_promtool_checks_the_rules() -> None:
    checked = promtool("check", "rules", "alerts.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout


@pytest.mark.system
def test_promtool_unit_tests_pass() -> None:
    tested = promtool("test", "rules", "alerts.test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_is_unit_tested_firing() -> None:
    rules = yaml.safe_load((RULES / "alerts.yaml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert names == ALERTS
    tests = yaml.safe_load((RULES / "alerts.test.yaml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert fired == ALERTS
