"""What the `moderate` command shows for each image: its table row, JSON record and summary counts.

Everything shown comes from a server this client does not control, and file names are anyone's:
control characters (terminal escapes, bidi overrides) are escaped before they reach a terminal.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from google.protobuf.json_format import MessageToDict
from moderation.v1.moderation_service_pb2 import ModerateImageResponse, Suggestion

from moderation_client.errors import ModerationError

# The proto's own names, as the library, its text format and every other client print them.
PASS = Suggestion.Name(Suggestion.SUGGESTION_PASS)
BLOCK = Suggestion.Name(Suggestion.SUGGESTION_BLOCK)
ERROR = "ERROR"
_VERDICTS = {value: name for name, value in Suggestion.items()}
# The table's columns after TARGET; a column empty in every row is left out.
COLUMNS = ("SUGGESTION", "LABEL", "SUB_LABEL", "SCORE", "BACKEND", "CACHED", "REQUEST_ID")


@dataclass(frozen=True)
class Failure:
    code: str  # gRPC status code name, or FILE_UNREADABLE
    message: str
    reason: str | None  # google.rpc.ErrorInfo reason, when the status carried one

    @classmethod
    def of(cls, error: ModerationError) -> Failure:
        return cls(error.code.name, error.message, error.reason)


@dataclass(frozen=True)
class Outcome:
    target: str
    answer: ModerateImageResponse | Failure


def printable(text: str) -> str:
    """`text` with control and format characters (ESC, BEL, U+202E, ...) written as Python escapes."""
    return "".join(
        (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
        if unicodedata.category(char) in {"Cc", "Cf"}
        else char
        for char in text
    )


def verdict(answer: ModerateImageResponse | Failure) -> str:
    if isinstance(answer, Failure):
        return ERROR
    return _VERDICTS.get(answer.suggestion, str(answer.suggestion))


def shown_score(answer: ModerateImageResponse) -> int:
    """The label's score or, when it has none (a PASS), the highest score any model gave."""
    return answer.score or max((result.score for result in answer.label_results), default=0)


def json_record(outcome: Outcome) -> dict[str, object]:
    answer = outcome.answer
    if isinstance(answer, Failure):
        error = {"code": answer.code, "message": answer.message, "reason": answer.reason}
        return {"target": outcome.target, "error": error}
    return {
        "target": outcome.target,
        "suggestion": verdict(answer),
        "label": answer.label,
        "sub_label": answer.sub_label,
        "score": shown_score(answer),
        "backend": answer.backend,
        "request_id": answer.request_id,
        "attempts": answer.attempts,
        "cached": answer.cached,
        "result": MessageToDict(
            answer, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        ),
    }


def _cells(answer: ModerateImageResponse) -> list[str]:
    """One answer's cells, in COLUMNS order."""
    cached = "cached" if answer.cached else ""
    score = str(shown_score(answer))
    return [verdict(answer), answer.label, answer.sub_label, score, answer.backend, cached, answer.request_id]


def _failure_cells(failure: Failure) -> list[str]:
    reason = f" [{failure.reason}]" if failure.reason else ""
    return [ERROR, f"{failure.code}: {failure.message}{reason}"]


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    # Cells past the last width (an error's message) are not padded.
    padded = [f"{cell:<{width}}" for cell, width in zip(cells, widths, strict=False)]
    return "  ".join([*padded, *cells[len(widths) :]]).rstrip()


def table(outcomes: Sequence[Outcome]) -> list[str]:
    """The header and one line per outcome, each column as wide as its widest cell.

    A column no answer fills (REQUEST_ID on the local backend, CACHED with the cache off) is left out.
    An error row has two cells after TARGET: ERROR, and its message, which runs on past the columns.
    """
    answers: list[list[str]] = []
    lines: list[tuple[bool, list[str]]] = []  # (is an answer, cells)
    for outcome in outcomes:
        if isinstance(outcome.answer, Failure):
            cells = [printable(cell) for cell in (outcome.target, *_failure_cells(outcome.answer))]
            lines.append((False, cells))
        else:
            answers.append([printable(cell) for cell in (outcome.target, *_cells(outcome.answer))])
            lines.append((True, answers[-1]))
    header = ["TARGET", *COLUMNS]
    kept = [0, 1, *(column for column in range(2, len(header)) if any(row[column] for row in answers))]
    widths = [max([len(header[column]), *(len(row[column]) for row in answers)]) for column in kept]
    widths[0] = max([widths[0], *(len(cells[0]) for _, cells in lines)])
    rows = [[cells[column] for column in kept] if is_answer else cells for is_answer, cells in lines]
    return [_line([header[column] for column in kept], widths), *(_line(row, widths) for row in rows)]


@dataclass
class Tally:
    verdicts: Counter[str] = field(default_factory=Counter)
    labels: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, answer: ModerateImageResponse | Failure) -> None:
        self.verdicts[verdict(answer)] += 1
        if isinstance(answer, Failure):
            self.errors[answer.code] += 1
        else:
            self.labels[answer.label or "(none)"] += 1


def _counts(counter: Counter[str]) -> str:
    # Most frequent first; names break ties, so the order does not depend on which answer came first.
    names = sorted(counter, key=lambda name: (-counter[name], name))
    return ", ".join(f"{counter[name]} {printable(name)}" for name in names)


def summary(tally: Tally) -> str:
    lines = [f"{tally.verdicts.total()} images: {_counts(tally.verdicts)}"]
    if tally.labels:
        lines.append(f"labels: {_counts(tally.labels)}")
    if tally.errors:
        lines.append(f"errors: {_counts(tally.errors)}")
    return "\n".join(lines)
