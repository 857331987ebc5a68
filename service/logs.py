"""Structured logs: one JSON object a line, with the current trace and span ids, secrets scrubbed.

Every RPC writes one access line (logger `moderation.access`): method, status code, duration, backend,
data_id, backend request id, trace_id and span_id. Image bytes and secrets are never logged; the
`RedactSecrets` filter is the last line of defence for the secrets.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry import trace

from common.scrub import REDACTED, Scrubber
from service.auth import CALLER

__all__ = ["REDACTED", "JsonFormatter", "RedactSecrets", "TraceContext", "configure_logging", "log_access"]

access_log = logging.getLogger("moderation.access")
_stdlib_encode = json.JSONEncoder(ensure_ascii=False, default=str).encode


def _encode(entry: dict[str, Any]) -> str:
    """One JSON line; what orjson refuses (a non-string key, an integer past 64 bits) goes through the
    standard library's encoder instead, so a line is never lost to its content."""
    try:
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return _stdlib_encode(entry)


class RedactSecrets(logging.Filter):
    """Secrets are never logged on purpose; this makes sure they are not logged by accident either."""

    def __init__(self, secrets: Iterable[str] | Scrubber) -> None:
        super().__init__()
        self._scrub = secrets if isinstance(secrets, Scrubber) else Scrubber(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        # Formatted once: the formatter reads it again, and need not format it a second time.
        record.msg, record.args = message, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        exc_text = record.exc_text or ""
        fields = getattr(record, "fields", {})
        # Every line passes here: one search of all its text, and the rewrite only if it found a secret.
        # (Field names and values as the formatters show them; a match across the separator only
        # costs a rewrite that finds nothing.)
        shown = "\n".join((message, exc_text, *map(str, fields), *map(str, fields.values())))
        if self._scrub.holds_secret(shown):
            record.msg = self._scrub(message)
            record.exc_text = self._scrub(exc_text) or None
            record.fields = json.loads(self._scrub(json.dumps(fields, default=str)))
        return True


class TraceContext(logging.Filter):
    """Stamps each record with the trace and span current where it was logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        # The last second formatted, and its ISO 8601 text up to the fraction: lines come in bursts.
        self._second = -1
        self._second_text = ""

    def _time(self, created: float) -> str:
        """`created` as ISO 8601 in UTC to the millisecond (`2026-12-02T01:00:00.123+00:00`)."""
        # Rounded to the microsecond first, as `datetime.fromtimestamp` does, then cut to the millisecond.
        fraction, whole = math.modf(created)
        second, micros = int(whole), round(fraction * 1e6)
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        if second != self._second:
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._second_text}.{micros // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("trace_id", "span_id"):
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        entry.update(getattr(record, "fields", {}))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return _encode(entry)


class RateLimitedLog:
    """At most one line per `interval` seconds for an event a client can repeat at will, each line
    counting the occurrences since the last one, so a flood of bad calls cannot flood the log too."""

    def __init__(
        self,
        logger: logging.Logger,
        message: str,
        *,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._message = message
        self._interval = interval
        self._clock = clock
        self._last: float | None = None
        self._unlogged = 0

    def record(self, **fields: object) -> None:
        """Counts one occurrence; logs it (a WARNING, with `fields`) when a line is due."""
        self._unlogged += 1
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            return
        self._last, count, self._unlogged = now, self._unlogged, 0
        self._logger.warning(
            "%s (%d since the last such line)",
            self._message,
            count,
            extra={"fields": {**fields, "count": count}},
        )


def log_access(method: str, code: str, seconds: float, **fields: object) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    line = {
        "rpc.method": method,
        "rpc.grpc.status_code": code,
        "duration_s": round(seconds, 6),
        "caller": CALLER.get(),
        **fields,
    }
    access_log.info("%s %s %.3fs", method, code, seconds, extra={"fields": line})


def configure_logging(level: str, outward: Scrubber, *, json_format: bool = True) -> None:
    """Log lines to stderr, through the gateway's `outward` scrubber (which keeps learning secrets)."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter()
        if json_format
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(TraceContext())
    handler.addFilter(RedactSecrets(outward))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # No line shows where it was logged from, or which thread or process logged it: skip finding out
    # on every record, as the logging HOWTO's "Optimization" section describes.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    # httpx logs every request at INFO; the access line and the spans already say what matters.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level)))
