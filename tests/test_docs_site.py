"""The docs site builds as CI builds it, `mkdocs build --strict` (Material theme): a broken link or
anchor, a page missing from the nav or a nav entry with no page fails. Its runbooks answer every alert."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
RUNBOOKS = ROOT / "docs" / "operations" / "runbooks.md"


@pytest.mark.system
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1"},
    )
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "site" / "reference" / "settings" / "index.html").is_file()
    assert "WARNING" not in built.stderr


def test_every_alert_has_a_runbook_and_every_runbook_an_alert() -> None:
    rules = yaml.safe_load(ALERTS.read_text())["groups"]
    alerts = {rule["alert"] for group in rules for rule in group["rules"] if "alert" in rule}
    sections = set(re.findall(r"^## (\w+)$", RUNBOOKS.read_text(), flags=re.MULTILINE))
    assert alerts
    assert sections == alerts


def test_the_readme_is_short_and_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text().splitlines()
    assert len(readme) <= 150
    first_block = readme[readme.index("```sh") + 1 : readme.index("```")]
    assert [line.split()[:2] for line in first_block] == [["make", "run"], ["make", "test"]]


def test_the_readme_links_into_pages_that_exist() -> None:
    links = re.findall(r"\]\((docs/[^)#]+)", (ROOT / "README.md").read_text())
    assert links
    assert [link for link in links if not (ROOT / link).is_file()] == []


def test_the_readme_runs_the_container_as_the_deploying_guide_does() -> None:
    def run_line(text: str) -> str:
        match = re.search(r"^podman run (?:[^\n]*\\\n)*[^\n]*", text, flags=re.MULTILINE)
        assert match is not None
        return " ".join(match.group(0).replace("\\\n", " ").split())

    guide = (ROOT / "docs" / "guides" / "deploying.md").read_text()
    assert run_line((ROOT / "README.md").read_text()) == run_line(guide)
