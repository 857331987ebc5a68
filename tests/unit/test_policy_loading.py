"""Reading a policy file and the lists it names (service.policy.loading): inheritance, every problem at
once, the version."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from moderation.v1.moderation_service_pb2 import Suggestion

from service.policy.loading import MAX_KEYWORDS, PolicyError, load_policy
from service.policy.rules import Rules
from tests.support.policy_files import write_policy

PASS, REVIEW, BLOCK = Suggestion.SUGGESTION_PASS, Suggestion.SUGGESTION_REVIEW, Suggestion.SUGGESTION_BLOCK

LOCAL_FORMAT = """
[default]
checks = ["porn", "ocr"]

[default.thresholds]
Porn = { review = 50, block = 80 }
Ad = { review = 50, block = 90 }

[biz_types.kids_app]
thresholds.Porn = { review = 20, block = 50 }
"""


def suggestion(rules: Rules, label: str, score: int) -> Suggestion.ValueType | None:
    verdict = rules.thresholds.judge(label, "", score)
    return verdict.suggestion if verdict else None


def test_the_local_backend_s_format_loads_and_biz_types_inherit_the_default(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path, LOCAL_FORMAT))
    kids, default = policy.rules("kids_app"), policy.rules("anything_else")
    assert default is policy.default
    assert suggestion(default, "Porn", 80) == suggestion(kids, "Porn", 80) == BLOCK
    assert (suggestion(default, "Porn", 20), suggestion(kids, "Porn", 20)) == (PASS, REVIEW)
    # Ad is inherited from [default.thresholds].
    assert suggestion(kids, "Ad", 95) == BLOCK
    assert suggestion(kids, "Terror", 95) is None


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    path = write_policy(
        tmp_path,
        """
        [default.thresholds]
        Porn = { review = 90, block = 80 }
        Ad = { review = 50, block = 300 }

        [default]
        keyword_lists = ["missing"]

        [biz_types.kids]
        colour = "red"

        [biz_types."kids app"]
        """,
    )
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    text = "\n".join(caught.value.problems)
    assert "review must not be above block" in text
    assert "default.thresholds.Ad.block" in text
    assert "biz_types.kids.colour" in text
    assert "biz_types.kids app" in text
    assert "no [keyword_lists.missing]" in text
    assert len(caught.value.problems) == 5


def test_problems_in_the_named_files_are_listed_with_their_lines(tmp_path: Path) -> None:
    path = write_policy(
        tmp_path,
        """
        [keyword_lists.spam]
        file = "spam.txt"
        label = "Ad"
        action = "block"

        [keyword_lists.gone]
        file = "gone.txt"
        label = "Ad"
        action = "review"

        [image_lists.banned]
        file = "banned.sha256"
        kind = "deny"
        """,
        **{"spam.txt": "ok\n...\n", "banned.sha256": "nothex\n" + "a" * 64 + " fine\n"},
    )
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    problems = caught.value.problems
    assert any("spam.txt" in p and "line 2" in p for p in problems)
    assert any("gone" in p and "cannot read" in p for p in problems)
    assert any("banned.sha256" in p and "line 1" in p for p in problems)
    assert len(problems) == 3


def test_a_list_holds_at_most_100000_entries(tmp_path: Path) -> None:
    words = "\n".join(f"w{i}" for i in range(MAX_KEYWORDS + 1))
    path = write_policy(
        tmp_path,
        '[keyword_lists.big]\nfile = "big.txt"\nlabel = "Ad"\naction = "review"\n',
        **{"big.txt": words},
    )
    with pytest.raises(PolicyError, match="at most 100,000"):
        load_policy(path)


def test_a_referenced_undecodable_or_missing_policy_file_is_one_problem(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path / "absent.toml")
    assert len(caught.value.problems) == 1


def test_the_version_changes_with_any_file_the_policy_names(tmp_path: Path) -> None:
    text = '[keyword_lists.spam]\nfile = "spam.txt"\nlabel = "Ad"\naction = "block"\n'
    first = load_policy(write_policy(tmp_path, text, **{"spam.txt": "one\n"})).version
    assert load_policy(write_policy(tmp_path, text, **{"spam.txt": "one\n"})).version == first
    assert load_policy(write_policy(tmp_path, text, **{"spam.txt": "two\n"})).version != first


def test_a_fifo_or_a_device_is_refused_never_waited_on(tmp_path: Path) -> None:
    # A FIFO blocks a plain open until a writer comes; /dev/zero never ends.
    fifo = tmp_path / "policy.toml"
    os.mkfifo(fifo)
    with pytest.raises(PolicyError) as caught:
        load_policy(fifo)
    assert "not a regular file but a FIFO" in caught.value.problems[0]
    (tmp_path / "lists").mkdir()
    path = write_policy(
        tmp_path / "lists",
        """
        [keyword_lists.endless]
        file = "/dev/zero"
        label = "Ad"
        action = "block"
        """,
    )
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert any("not a regular file but a character device" in p for p in caught.value.problems)
