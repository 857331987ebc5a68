"""The gateway's log, read back: how many lines at each level and from each logger, the kinds of
warning, the errors, and any line that is not JSON."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# Enough of the worst lines to see what went wrong, not so many that they drown the report.
SHOWN = 3


@dataclass
class LogSummary:
    lines: int = 0
    by_level: Counter[str] = field(default_factory=Counter)
    by_logger: Counter[str] = field(default_factory=Counter)
    # Warning messages with their numbers blanked out, so one kind of warning is one entry.
    warnings: Counter[str] = field(default_factory=Counter)
    # Lines MODERATION_LOG_FORMAT=json should have made JSON but did not (a stray print, a traceback).
    not_json: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def summarise(path: Path) -> LogSummary:
    summary = LogSummary()
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            summary.lines += 1
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                summary.not_json.append(line.rstrip()[:200])
                continue
            level = str(entry.get("level", "?"))
            summary.by_level[level] += 1
            summary.by_logger[str(entry.get("logger", "?"))] += 1
            message = str(entry.get("message", ""))
            if level == "WARNING":
                summary.warnings[_shape(message)] += 1
            elif level in {"ERROR", "CRITICAL"} and len(summary.errors) < SHOWN:
                summary.errors.append(line.rstrip()[:400])
    return summary


def _shape(message: str) -> str:
    """The message with digits blanked and the request id (unique per call) cut off, so that one kind
    of warning is one entry: `backend tencent failed after # attempt(s): IMS answered HTTP ###`."""
    return "".join("#" if c.isdigit() else c for c in message.split(", request id")[0])
