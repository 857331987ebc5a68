"""The one table of what each failure kind means: a complete row per Kind, as the docs' errors page says,
its reasons declared by the contract, whose options the client reads too. Properties only: the rows
themselves are written once, in service/errors.py."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from moderation_client import RETRYABLE_REASONS

from backends.errors import Kind
from service.errors import KIND_POLICIES, REASON_OPTIONS, CircuitEffect, KindPolicy

ERRORS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "errors.md"
SERVICE = Path(__file__).resolve().parents[2] / "service"


@pytest.mark.parametrize("kind", list(Kind), ids=lambda kind: kind.name)
def test_every_kind_has_a_complete_row(kind: Kind) -> None:
    row = KIND_POLICIES[kind]
    assert row.code is not grpc.StatusCode.OK
    assert re.fullmatch(r"[A-Z]+(_[A-Z]+)*", row.reason)
    flags = (row.retried, row.fails_over, row.operator_fault, row.billed, row.about_the_request)
    assert all(isinstance(flag, bool) for flag in flags)
    assert isinstance(row.circuit, CircuitEffect)
    assert row.reason in REASON_OPTIONS, f"{row.reason} is not a value of moderation.v1.ErrorReason"


def test_every_reason_the_contract_declares_is_one_the_gateway_sends() -> None:
    rows = {row.reason for row in KIND_POLICIES.values()}
    source = "\n".join(path.read_text(encoding="utf-8") for path in SERVICE.rglob("*.py"))
    unsent = [reason for reason in REASON_OPTIONS if reason not in rows and f'"{reason}"' not in source]
    assert unsent == []


def test_the_errors_page_names_every_reason_the_contract_declares() -> None:
    page = ERRORS_PAGE.read_text(encoding="utf-8")
    assert [reason for reason in REASON_OPTIONS if f"`{reason}`" not in page] == []


def test_what_a_client_may_retry_was_never_sent_upstream_and_says_when_to_retry() -> None:
    retryable = [row for row in KIND_POLICIES.values() if row.client_retries]
    assert retryable
    for row in retryable:
        assert (row.circuit, row.billed, row.retried) == (CircuitEffect.NONE, False, False), row.reason
        assert row.retry_delay is not None, row.reason


def test_a_billed_failure_reached_the_backend() -> None:
    for row in KIND_POLICIES.values():
        if row.billed:
            assert row.circuit is not CircuitEffect.NONE, row.reason


def test_a_failure_about_the_request_is_final() -> None:
    # The next backend, or a retry, would judge the same request the same way.
    for row in KIND_POLICIES.values():
        if row.about_the_request:
            assert (row.retried, row.fails_over, row.billed) == (False, False, False), row.reason


def test_the_clients_retry_set_is_read_from_the_same_contract() -> None:
    contract = frozenset(reason for reason, options in REASON_OPTIONS.items() if options.retryable)
    assert contract == RETRYABLE_REASONS
    assert {row.reason for row in KIND_POLICIES.values() if row.client_retries} <= RETRYABLE_REASONS


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
