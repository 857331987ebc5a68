"""The one table of what each failure kind means: a complete row per Kind, as the docs' errors page says."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest

from backends.errors import Kind
from service.errors import KIND_POLICIES, CircuitEffect, KindPolicy

ERRORS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "errors.md"

FAILURE, SUCCESS, NONE = CircuitEffect.FAILURE, CircuitEffect.SUCCESS, CircuitEffect.NONE
# What each kind meant when it was spread over six tables, pinned so that moving it into one changed
# nothing. The status: code, reason, retry delay.
STATUSES = {
    Kind.INVALID_REQUEST: ("INVALID_ARGUMENT", "BACKEND_REJECTED_REQUEST", None),
    Kind.IMAGE_DOWNLOAD_FAILED: ("FAILED_PRECONDITION", "IMAGE_DOWNLOAD_FAILED", None),
    Kind.RATE_LIMITED: ("RESOURCE_EXHAUSTED", "BACKEND_RATE_LIMITED", 1.0),
    Kind.QUOTA_EXHAUSTED: ("RESOURCE_EXHAUSTED", "BACKEND_QUOTA_EXHAUSTED", None),
    Kind.MISCONFIGURED: ("INTERNAL", "BACKEND_MISCONFIGURED", None),
    Kind.ACCOUNT_UNAVAILABLE: ("FAILED_PRECONDITION", "BACKEND_ACCOUNT_UNAVAILABLE", None),
    Kind.UNAVAILABLE: ("UNAVAILABLE", "BACKEND_UNAVAILABLE", 1.0),
    Kind.TIMEOUT: ("DEADLINE_EXCEEDED", "BACKEND_TIMEOUT", None),
    Kind.FAILED: ("INTERNAL", "BACKEND_FAILED", None),
    Kind.THROTTLED: ("RESOURCE_EXHAUSTED", "RATE_BUDGET_EXHAUSTED", 1.0),
    Kind.OVERLOADED: ("RESOURCE_EXHAUSTED", "BACKEND_OVERLOADED", 1.0),
    Kind.CALLER_QUOTA_EXHAUSTED: ("RESOURCE_EXHAUSTED", "CALLER_QUOTA_EXHAUSTED", None),
    Kind.QUOTA_UNAVAILABLE: ("UNAVAILABLE", "QUOTA_STORE_UNAVAILABLE", 1.0),
}
# The decisions: retried, fails over, circuit, operator fault.
DECISIONS = {
    Kind.INVALID_REQUEST: (False, False, SUCCESS, False),
    Kind.IMAGE_DOWNLOAD_FAILED: (False, False, SUCCESS, False),
    Kind.RATE_LIMITED: (True, True, SUCCESS, False),
    Kind.QUOTA_EXHAUSTED: (False, True, SUCCESS, False),
    Kind.MISCONFIGURED: (False, True, FAILURE, True),
    Kind.ACCOUNT_UNAVAILABLE: (False, True, FAILURE, True),
    Kind.UNAVAILABLE: (True, True, FAILURE, False),
    Kind.TIMEOUT: (False, True, FAILURE, False),
    Kind.FAILED: (False, True, SUCCESS, True),
    Kind.THROTTLED: (False, True, NONE, False),
    Kind.OVERLOADED: (False, True, NONE, False),
    Kind.CALLER_QUOTA_EXHAUSTED: (False, True, NONE, False),
    Kind.QUOTA_UNAVAILABLE: (False, True, NONE, False),
}


@pytest.mark.parametrize("kind", list(Kind), ids=lambda kind: kind.name)
def test_every_kind_has_a_complete_row(kind: Kind) -> None:
    row = KIND_POLICIES[kind]
    assert row.code is not grpc.StatusCode.OK
    assert re.fullmatch(r"[A-Z]+(_[A-Z]+)*", row.reason)
    assert all(isinstance(flag, bool) for flag in (row.retried, row.fails_over, row.operator_fault))
    assert isinstance(row.circuit, CircuitEffect)
    assert kind in STATUSES, f"{kind.name} is new: pin its row here too"
    assert (row.code.name, row.reason, row.retry_delay) == STATUSES[kind]
    assert (row.retried, row.fails_over, row.circuit, row.operator_fault) == DECISIONS[kind]


def test_the_table_has_no_row_for_a_kind_that_does_not_exist() -> None:
    assert set(KIND_POLICIES) == set(Kind)


def test_each_reason_names_one_kind() -> None:
    reasons = [row.reason for row in KIND_POLICIES.values()]
    assert len(set(reasons)) == len(reasons)


def test_retried_kinds_tell_the_caller_when_to_retry_too() -> None:
    for kind, row in KIND_POLICIES.items():
        if row.retried:
            assert row.retry_delay is not None, kind.name


def test_a_row_must_spell_out_every_decision() -> None:
    with pytest.raises(TypeError, match="missing"):
        KindPolicy(code=grpc.StatusCode.INTERNAL, reason="X")  # type: ignore[call-arg]


def documented_errors() -> list[tuple[str, set[str], str]]:
    """The errors page's tables as (gRPC code, reasons, retried by the gateway) rows."""
    rows = []
    for line in ERRORS_PAGE.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].startswith("`"):
            rows.append((cells[0].strip("`"), set(re.findall(r"`([A-Z_]+)`", cells[1])), cells[3]))
    return rows


@pytest.mark.parametrize("kind", list(Kind), ids=lambda kind: kind.name)
def test_the_errors_page_says_what_the_row_does(kind: Kind) -> None:
    row = KIND_POLICIES[kind]
    (documented,) = [entry for entry in documented_errors() if row.reason in entry[1]]
    code, _, retried = documented
    assert (code, retried) == (row.code.name, "yes" if row.retried else "no")
