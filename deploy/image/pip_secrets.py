"""Writes the build machine's pip configuration and CA bundle where `make image` hands them to the build
as secrets (`podman build --secret`), so a build behind a proxy or a private index works as pip does here.

The configuration is every setting pip reports (its files and PIP_* variables, merged as pip merges
them), except those that name a file on this machine: the build cannot read them. The CA bundle is the one
pip uses here (its `cert`), else the system's.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def pip_settings() -> dict[tuple[str, str], str]:
    """`pip config list` as {(section, key): value}; `:env:` variables count as `global`."""
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], check=True, capture_output=True, text=True
    ).stdout
    settings: dict[tuple[str, str], str] = {}
    for line in listing.splitlines():
        name, _, quoted = line.partition("=")
        section, _, key = name.rpartition(".")
        section = "global" if section in {"", ":env:"} else section
        settings[section, key] = quoted.strip().strip("'")
    return settings


def names_a_local_file(value: str) -> bool:
    return any(word.startswith(("/", "file:", "~")) for word in value.split())


def main(out: Path) -> None:
    settings = pip_settings()
    config = configparser.ConfigParser(interpolation=None)
    for (section, key), value in sorted(settings.items()):
        if key == "cert" or names_a_local_file(value):
            continue
        if not config.has_section(section):
            config.add_section(section)
        config.set(section, key, value)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "pip.conf").open("w") as file:
        config.write(file)
    ca_bundle = Path(settings.get(("global", "cert"), SYSTEM_CA_BUNDLE))
    shutil.copyfile(ca_bundle if ca_bundle.is_file() else SYSTEM_CA_BUNDLE, out / "ca.crt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
