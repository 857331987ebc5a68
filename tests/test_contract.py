"""The contract checks `make lint` runs, as the real `make contract-check` on copies of the proto.

The real contract must pass buf lint and buf breaking against the committed v1 image, and each check must
fail on the change it exists to catch: a proto that breaks STANDARD style, and one that renumbers a field.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = Path("moderation/v1/moderation_service.proto")
# Variables a parent make passes down (jobserver descriptors among them) that mean nothing to this make.
PARENT_MAKE_VARIABLES = frozenset({"MAKEFLAGS", "MFLAGS", "MAKELEVEL"})


@dataclass(frozen=True)
class Check:
    status: int
    output: str


def contract_check(proto_dir: Path, image: Path) -> Check:
    """Runs the same target `make lint` runs, on the protos under `proto_dir`, building `image`."""
    completed = subprocess.run(
        [
            "make",
            "--silent",
            "--no-print-directory",
            "-C",
            str(ROOT),
            "contract-check",
            f"PROTO_DIR={proto_dir}",
            f"CONTRACT_BUILD={image}",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={name: value for name, value in os.environ.items() if name not in PARENT_MAKE_VARIABLES},
    )
    return Check(completed.returncode, completed.stdout + completed.stderr)


def edited_contract(tmp_path: Path, old: str, new: str) -> Path:
    """A proto directory holding the contract (every file of it) with `old` replaced by `new` in the
    service's file."""
    source = (ROOT / "protos" / CONTRACT).read_text()
    assert source.count(old) == 1, f"{old!r} must occur exactly once for the edit to mean anything"
    proto_dir = tmp_path / "protos"
    for proto in (ROOT / "protos").glob("moderation/*/*.proto"):
        copy = proto_dir / proto.relative_to(ROOT / "protos")
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(proto.read_text())
    (proto_dir / CONTRACT).write_text(source.replace(old, new))
    return proto_dir


def test_the_contract_passes_lint_and_breaking(tmp_path: Path) -> None:
    check = contract_check(ROOT / "protos", tmp_path / "contract.binpb")

    assert check.status == 0, check.output


def test_adding_a_field_is_not_a_breaking_change(tmp_path: Path) -> None:
    added_field = "  string biz_tag = 10;\n  // A later addition.\n  string note = 11;\n"
    proto_dir = edited_contract(tmp_path, "  string biz_tag = 10;\n", added_field)

    check = contract_check(proto_dir, tmp_path / "contract.binpb")

    assert check.status == 0, check.output


def test_a_renumbered_field_fails_the_breaking_check(tmp_path: Path) -> None:
    proto_dir = edited_contract(tmp_path, "string biz_tag = 10;", "string biz_tag = 25;")

    check = contract_check(proto_dir, tmp_path / "contract.binpb")

    assert check.status != 0
    assert (
        'Previously present field "10" with name "biz_tag" on message "ModerateImageRequest" was deleted.'
        in check.output
    ), check.output


def test_a_standard_style_violation_fails_the_lint_check(tmp_path: Path) -> None:
    # ENUM_ZERO_VALUE_SUFFIX is in STANDARD but not in BASIC or MINIMAL: this fails only under STANDARD.
    proto_dir = edited_contract(tmp_path, "SUGGESTION_UNSPECIFIED = 0;", "SUGGESTION_NONE = 0;")

    check = contract_check(proto_dir, tmp_path / "contract.binpb")

    assert check.status != 0
    assert 'Enum zero value name "SUGGESTION_NONE" should be suffixed with "_UNSPECIFIED".' in check.output, (
        check.output
    )
