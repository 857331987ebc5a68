"""MODERATION_CALLBACK_CALLERS_FILE: every problem reported at once, no secret quoted."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from service.tasks.callers import CallersFileError, load_callers

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_a_callers_file_is_read_relative_to_itself(tmp_path: Path) -> None:
    (tmp_path / "uploads-webhooks").write_text(f"{SECRET}\n")
    path = tmp_path / "callers.toml"
    path.write_text(
        '[uploads]\nsecrets_file = "uploads-webhooks"\nallowed_networks = ["10.1.0.0/16"]\n[reports]\n'
    )
    callers = load_callers(path)
    assert callers["uploads"].secrets_file == tmp_path / "uploads-webhooks"
    assert callers["uploads"].allowed_networks == (ipaddress.ip_network("10.1.0.0/16"),)
    assert callers["reports"].secrets_file is None


def test_every_problem_is_reported_and_no_secret_quoted(tmp_path: Path) -> None:
    (tmp_path / "bad-webhooks").write_text("not-a-whsec-secret-1234567890\n")
    path = tmp_path / "callers.toml"
    path.write_text(
        '[a]\nsecrets_file = "bad-webhooks"\n[b]\nallowed_networks = ["nowhere"]\ncolour = "red"\n'
        '[c]\nsecrets_file = "missing"\n'
    )
    with pytest.raises(CallersFileError) as refused:
        load_callers(path)
    lines = str(refused.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "a.secrets_file",
        "b.colour",
        "b.allowed_networks",
        "c.secrets_file",
    ]
    assert "not-a-whsec" not in str(refused.value)
