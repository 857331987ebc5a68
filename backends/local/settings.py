"""The local backend's settings, importable without loading its models (the service reads them at start
whichever backend it runs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from backends.local.fetch import FetchPolicy

DEFAULT_POLICY_FILE = Path(__file__).with_name("default_policy.toml")


@dataclass(frozen=True)
class LocalSettings:
    policy_file: Path = DEFAULT_POLICY_FILE
    keyword_dir: Path | None = None
    allow_dir: Path | None = None
    deny_dir: Path | None = None
    workers: int = 2
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
