"""Quotas as the routing file declares them: `[quotas.<caller>]`, one table or an array of tables.

    [quotas.uploads]                  # the caller's name, as the token file gives it
    per_day = 500                     # or per_month; billed calls in one calendar period
    mode = "hard"                     # refused past the limit; "soft": served, reported at 80 % and 100 %
    biz_types = ["avatars", "kids_*"] # optional: only these BizTypes (exact names or glob patterns)

    [[quotas.reports]]                # several quotas for one caller: an array of tables
    per_month = 100000
    [[quotas.reports]]
    per_day = 5000
    mode = "soft"

Validated whole, each problem reported with where it is; `routes.py` leaves the `[quotas]` table to us.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from backends.options import describe_errors
from common.files import UnreadableFile, read_text_file
from service.routing_file import ROUTES_FILE_LIMIT, RoutesError

__all__ = ["Period", "Quota", "QuotaBook", "load_quotas", "quotas_from_document"]

Period = Literal["day", "month"]


@dataclass(frozen=True)
class Quota:
    """One caller's allowance of billed calls per calendar period."""

    caller: str
    period: Period
    limit: int
    hard: bool
    biz_types: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """How the caller, the metrics and `QuotaFailure` name it: `per_day`, `per_month[avatars,kids_*]`."""
        scope = f"[{','.join(self.biz_types)}]" if self.biz_types else ""
        return f"per_{self.period}{scope}"

    def governs(self, biz_type: str) -> bool:
        return not self.biz_types or any(fnmatch.fnmatchcase(biz_type, p) for p in self.biz_types)


class _Table(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    per_day: int | None = Field(None, ge=0, le=10**12)
    per_month: int | None = Field(None, ge=0, le=10**12)
    mode: Literal["hard", "soft"] = "hard"
    biz_types: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_period(self) -> _Table:
        if (self.per_day is None) == (self.per_month is None):
            raise ValueError("give per_day or per_month (one of them)")
        return self


@dataclass(frozen=True)
class QuotaBook:
    """Every caller's quotas; a caller with none is not governed."""

    by_caller: Mapping[str, tuple[Quota, ...]]

    def of(self, caller: str) -> tuple[Quota, ...]:
        return self.by_caller.get(caller, ())

    def governing(self, caller: str, biz_type: str) -> tuple[Quota, ...]:
        return tuple(q for q in self.of(caller) if q.governs(biz_type))

    def __bool__(self) -> bool:
        return bool(self.by_caller)


EMPTY = QuotaBook({})


def load_quotas(path: Path) -> QuotaBook:
    """The `[quotas]` of the routing file at `path`; `RoutesError` with every problem."""
    try:
        document = tomllib.loads(read_text_file(path, ROUTES_FILE_LIMIT))
    except UnreadableFile as problem:
        raise RoutesError([f"cannot read the file ({problem})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise RoutesError([f"not valid TOML: {exc}"]) from None
    except RecursionError:
        raise RoutesError(["nested too deeply"]) from None
    return quotas_from_document(document)


def quotas_from_document(document: Mapping[str, Any]) -> QuotaBook:
    section = document.get("quotas", {})
    if not isinstance(section, dict):
        raise RoutesError(["[quotas]: must be a table of callers"])
    problems: list[str] = []
    book: dict[str, tuple[Quota, ...]] = {}
    for caller, tables in section.items():
        listed = tables if isinstance(tables, list) else [tables]
        quotas = []
        for number, table in enumerate(listed, start=1):
            where = f"[quotas.{caller}]" + (f" #{number}" if len(listed) > 1 else "")
            quota = _quota(caller, table, where, problems)
            if quota is not None:
                quotas.append(quota)
        names = [q.name for q in quotas]
        problems.extend(
            f"[quotas.{caller}]: two quotas named {n}" for n in sorted(set(names)) if names.count(n) > 1
        )
        book[caller] = tuple(quotas)
    if problems:
        raise RoutesError(problems)
    return QuotaBook(book)


def _quota(caller: str, table: object, where: str, problems: list[str]) -> Quota | None:
    if not isinstance(table, dict):
        problems.append(f"{where}: must be a table")
        return None
    try:
        parsed = _Table.model_validate(table)
    except ValidationError as error:
        problems.extend(describe_errors(error, where))
        return None
    period: Period = "day" if parsed.per_day is not None else "month"
    limit = parsed.per_day if parsed.per_day is not None else parsed.per_month
    assert limit is not None
    return Quota(caller, period, limit, parsed.mode == "hard", parsed.biz_types)
