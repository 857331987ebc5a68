# ruff: noqa: RUF001  # Chinese text uses full-width punctuation: that is what is tested.
"""Keyword lists and detectors over an image's text, in any language (service.policy.keywords,
service.policy.detectors)."""

from __future__ import annotations

import pytest

from service.policy.detectors import Detector, find_phone, find_url
from service.policy.keywords import KeywordIndex, KeywordList, normalise
from service.policy.model import DetectorConfig

URL = Detector.configured("url", DetectorConfig(action="block"))
SPAM = KeywordList("spam", "Ad", "review", ("free money", "加微信", "Casino"))
SLURS = KeywordList("abuse", "Abuse", "block", ("idiot", "casino"))


@pytest.mark.parametrize(
    "text",
    [
        "FREE MONEY today",
        "f.r.e.e  m o n e y",
        "Ｆｒｅｅ　Ｍｏｎｅｙ",  # full-width, as Chinese keyboards type it
        "get-free_money!",
        "请加 微 信：abc",
        "请 加-微-信",
    ],
)
def test_evasive_spellings_are_caught(text: str) -> None:
    hit = KeywordIndex([SPAM]).find(text)
    assert hit is not None
    assert hit.list is SPAM


def test_unrelated_text_is_not_matched() -> None:
    assert KeywordIndex([SPAM]).find("freedom of money markets") is None
    assert KeywordIndex([SPAM]).find("") is None


def test_the_most_severe_list_wins_and_the_entry_is_reported_as_listed() -> None:
    hit = KeywordIndex([SPAM, SLURS]).find("Online CASINO and free money")
    assert hit is not None
    assert (hit.list.name, hit.entry) == ("abuse", "casino")


def test_normalisation_folds_case_width_and_drops_separators() -> None:
    assert normalise("Ｓtraße — 123") == "strasse123"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("加我微信或致电 138 0013 8000 咨询", "138 0013 8000"),
        ("联系电话：+86 139-1234-5678", "+86 139-1234-5678"),
        ("Call us at (415) 555-2671 today", "(415) 555-2671"),
    ],
)
def test_phone_numbers_are_found_in_chinese_and_english(text: str, found: str) -> None:
    assert find_phone(text, ("CN", "US")) == found


def test_numbers_that_are_not_phone_numbers_are_not_reported() -> None:
    assert find_phone("订单号 2024 共 3 件，总价 199 元", ("CN", "US")) is None
    assert find_phone("version 1.2.3 released in 2024", ("CN", "US")) is None


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("访问 www.example.com 领取红包", "www.example.com"),
        ("详情见https://spam.cn/x?a=1", "https://spam.cn/x?a=1"),
        ("Visit example.org for free stuff", "example.org"),
        ("请访问ｗｗｗ．ｓｐａｍ．ｃｎ领奖", "www.spam.cn"),
        ("WWW.SPAM.CN", "WWW.SPAM.CN"),
        ("go to 47.100.1.2 now", "47.100.1.2"),
        ("打开 http://localhost:8080/x", "http://localhost:8080/x"),
    ],
)
def test_urls_are_found_in_chinese_and_english(text: str, found: str) -> None:
    assert find_url(text) == found
    # The check on the event loop lets every such text through to the search.
    assert URL.may_find(text)


def test_prices_and_dates_are_not_searched_for_urls() -> None:
    poster = "原价 299.00 元，现价 104.65 元，3.5 折。Valid until 12.31.2026. 活动 2026.12.06"
    assert not URL.may_find(poster)
    assert find_url(poster) is None


def test_text_without_urls_has_none() -> None:
    assert find_url("just words here, no link. 没有链接。") is None
