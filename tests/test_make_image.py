"""`make image` builds on the official Python base when a registry gives it, and otherwise says so and
builds on the Debian base made by mmdebstrap. podman and the base builder are stand-ins here that record
what make asks of them (the real build runs under `make image-test`)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.make_targets import run_make, write_program

# podman: `image exists` answers $STUB_BASE_PRESENT (1: absent), `pull` fails as with no registry, and
# every call is logged.
PODMAN = """#!/bin/sh
echo "$*" >> "$STUB_LOG"
case "$1 $2" in
  "image exists") exit "${STUB_BASE_PRESENT:-1}" ;;
  "image ls") echo "stub:dev 1 MB" ;;
esac
[ "$1" = pull ] && exit 125
exit 0
"""
DEBIAN_BASE = """#!/bin/sh
echo "debian-base $*" >> "$STUB_LOG"
echo localhost/stub-debian-base:bookworm
"""


def make_image(tmp_path: Path, *, base_present: bool) -> tuple[str, list[str]]:
    stubs = tmp_path / "bin"
    stubs.mkdir()
    write_program(stubs / "podman", PODMAN)
    debian_base = write_program(stubs / "debian-base", DEBIAN_BASE)
    log = tmp_path / "calls.log"
    env = {
        **os.environ,
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "STUB_LOG": str(log),
        "STUB_BASE_PRESENT": "0" if base_present else "1",
    }
    output = run_make(
        "-o",
        "system-deps",
        "image",
        f"DEBIAN_BASE={debian_base}",
        f"IMAGE_BUILD={tmp_path / 'image'}",
        env=env,
    )
    return output, log.read_text().splitlines()


def build_call(calls: list[str]) -> str:
    (build,) = [call for call in calls if " build " in f" {call} "]
    return build


def test_no_registry_builds_on_the_debian_base_and_says_so(tmp_path: Path) -> None:
    output, calls = make_image(tmp_path, base_present=False)
    assert "no registry reachable" in output
    assert "mmdebstrap" in output
    assert any(call.startswith("pull ") for call in calls)
    assert "--build-arg BASE_IMAGE=localhost/stub-debian-base:bookworm" in build_call(calls)
    assert "what takes the space" in output


def test_the_official_base_when_it_is_there(tmp_path: Path) -> None:
    output, calls = make_image(tmp_path, base_present=True)
    assert "no registry reachable" not in output
    assert not [call for call in calls if call.startswith("debian-base")]
    assert "BASE_IMAGE" not in build_call(calls)
