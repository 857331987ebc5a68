"""The callback's retry schedule, the attempts' outcome labels, and the body."""

from __future__ import annotations

import json
import random

import pytest
from moderation.v1.moderation_service_pb2 import ModerateImageResponse, ModerationTask, TaskState

from service.tasks.delivery import DEFAULT_SCHEDULE, JITTER, callback_body, next_delay, outcome_label
from service.tasks.egress import Answer


def test_the_default_schedule_is_standard_webhooks() -> None:
    hours = 3600
    assert (
        0,
        5,
        300,
        1800,
        2 * hours,
        5 * hours,
        10 * hours,
        14 * hours,
        20 * hours,
        24 * hours,
    ) == DEFAULT_SCHEDULE


def test_each_wait_is_jittered_around_the_schedule_and_the_schedule_ends() -> None:
    rng = random.Random(7)
    for attempts in range(1, len(DEFAULT_SCHEDULE)):
        delay = next_delay(attempts, DEFAULT_SCHEDULE, None, rng)
        assert delay is not None
        planned = DEFAULT_SCHEDULE[attempts]
        assert planned * (1 - JITTER) <= delay <= planned * (1 + JITTER)
    assert next_delay(len(DEFAULT_SCHEDULE), DEFAULT_SCHEDULE, None, rng) is None


def test_retry_after_is_honoured_when_longer_and_capped() -> None:
    rng = random.Random(7)
    assert next_delay(1, DEFAULT_SCHEDULE, 120.0, rng) == 120.0
    delay = next_delay(2, DEFAULT_SCHEDULE, 1.0, rng)
    assert delay is not None
    assert delay >= 300 * (1 - JITTER)
    assert next_delay(1, DEFAULT_SCHEDULE, 10**9, rng) == 86400.0


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        (Answer(204), "delivered"),
        (Answer(410), "gone"),
        (Answer(307), "http_3xx"),
        (Answer(429), "http_4xx"),
        (Answer(503), "http_5xx"),
        (Answer(0, error="no answer within 15 s"), "no_answer"),
        (Answer(0, error="refused: the host resolves to an address that is not allowed"), "refused"),
    ],
)
def test_outcome_labels(answer: Answer, label: str) -> None:
    assert outcome_label(answer) == label


def test_the_body_keeps_zero_values() -> None:
    view = ModerationTask(task_id="tsk_1_a", state=TaskState.TASK_STATE_SUCCEEDED)
    view.result.CopyFrom(ModerateImageResponse(data_id="a"))
    view.finished_at.FromSeconds(1_800_000_000)
    body = json.loads(callback_body(view))
    assert body["type"] == "moderation.task.succeeded"
    assert body["timestamp"] == "2027-01-15T08:00:00Z"
    assert body["data"]["dataId"] == "a"
    assert body["data"]["score"] == 0  # a zero value, kept
    failed = ModerationTask(task_id="tsk_1_b", state=TaskState.TASK_STATE_FAILED)
    failed.error.code = 4
    assert json.loads(callback_body(failed))["data"] == {"code": 4, "message": "", "details": []}
