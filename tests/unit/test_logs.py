"""The JSON log line: its timestamp, its fields, and the secrets filter on every line."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from service.logs import REDACTED, JsonFormatter, RedactSecrets

SECRET = "AKIDs3cr3tValueOfTheKey"


def record(message: str, *args: object, **fields: object) -> logging.LogRecord:
    made = logging.LogRecord("moderation.access", logging.INFO, __file__, 1, message, args, None)
    made.fields = fields
    return made


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_the_time_is_what_datetime_would_write(created: float) -> None:
    line = record("m")
    line.created = created
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    assert json.loads(JsonFormatter().format(line))["time"] == expected


def test_a_line_holds_the_message_and_every_field() -> None:
    line = json.loads(JsonFormatter().format(record("%s %s", "ModerateImage", "OK", backend="tencent")))
    assert (line["message"], line["backend"], line["level"]) == ("ModerateImage OK", "tencent", "INFO")


def test_a_secret_anywhere_in_a_line_is_redacted_and_the_rest_kept() -> None:
    redact = RedactSecrets([SECRET])
    for leaky in (
        record("key %s", SECRET, backend="tencent"),
        record("m", backend="tencent", data_id=f"x{SECRET}x"),
        record("m", backend="tencent", nested=[{"k": SECRET}]),
    ):
        assert redact.filter(leaky)
        line = JsonFormatter().format(leaky)
        assert SECRET not in line
        assert REDACTED in line
        assert json.loads(line)["backend"] == "tencent"


def test_a_line_without_secrets_is_left_as_it_was() -> None:
    clean = record("%s %s", "ModerateImage", "OK", backend="tencent", attempts=1)
    before = JsonFormatter().format(clean)
    assert RedactSecrets([SECRET]).filter(clean)
    assert JsonFormatter().format(clean) == before


def test_fields_any_encoder_refuses_still_make_a_line() -> None:
    line = json.loads(JsonFormatter().format(record("m", big=2**70, nested={1: "one"}, kind=ValueError("x"))))
    assert (line["big"], line["nested"], line["kind"]) == (2**70, {"1": "one"}, "x")
