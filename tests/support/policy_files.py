"""Policy files for the tests: the policy and the lists it names, written into one folder."""

from __future__ import annotations

from pathlib import Path

from service.policy.loading import PolicySource, load_policy


def write_policy(folder: Path, text: str, **files: str) -> Path:
    """`folder`/policy.toml holding `text`, and each of `files` (name: content) beside it."""
    for name, content in files.items():
        (folder / name).write_text(content, encoding="utf-8")
    path = folder / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def policy_settings(path: Path) -> dict[str, object]:
    """Settings overrides for a gateway with the policy in `path`, as MODERATION_POLICY_FILE loads it."""
    return {"policy_file": path, "policy": load_policy(path), "policy_source": PolicySource(path)}
