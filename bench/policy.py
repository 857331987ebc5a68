"""What the gateway's policy costs (service.policy), measured in this process on generated lists: the
per-call time of the text and exact-hash rules, PDQ hashing, the near-duplicate look-up at several list
sizes, and the memory each kind of list takes per 100,000 entries."""

from __future__ import annotations

import gc
import hashlib
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from moderation.v1.moderation_service_pb2 import ModerateImageResponse, OcrResult, Suggestion

from service.policy.decide import decide, searches_text
from service.policy.detectors import Detector
from service.policy.imagelists import ExactList
from service.policy.keywords import KeywordIndex, KeywordList
from service.policy.model import DetectorConfig, ThresholdConfig
from service.policy.pdq import NearList, PdqHash, pdq_hash
from service.policy.rules import Rules
from service.policy.thresholds import Thresholds
from testbed.local_images import encode, photo

__all__ = ["PolicyResult", "PolicySizes", "measure_policy"]

# Latin and CJK letters: keywords and texts in both scripts.
_LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz") + [chr(c) for c in range(0x4E00, 0x4E00 + 400)])
OCR_TEXT = "限时优惠 加微信 领取 free gift card, call now! 本店地址：人民路 18 号。Visit our shop today " * 2  # noqa: RUF001
# The same with a phone number and a URL in it: the detectors' full cost.
CONTACT_TEXT = OCR_TEXT + " 加我 138 0013 8000 或访问 www.spam-shop.cn"
# A shop's poster as OCR reads it: prices and dates, digits enough for the phone search to run, no
# contact details to find.
PROMO_TEXT = (
    "双十二 限时 3.5 折！原价 299.00 元，现价 104.65 元。活动时间 2026.12.06 - 2026.12.12，"  # noqa: RUF001
    "满 200 减 30，会员再享 9.5 折。Free shipping on orders over 99.00, valid until 12.31.2026. "  # noqa: RUF001
    "门店：人民路 18 号 3 楼 301 室，营业时间 10:00-22:00。"  # noqa: RUF001
) * 2


@dataclass(frozen=True)
class PolicySizes:
    keywords: int
    exact_hashes: int
    pdq_hashes: int
    # The near-duplicate look-up is also timed at these list sizes.
    pdq_sizes: tuple[int, ...]
    calls: int


@dataclass(frozen=True)
class PolicyResult:
    sizes: PolicySizes
    # Seconds per call.
    text_and_exact: float
    keywords: float
    exact: float
    # Seconds per call of both detectors' search (in a worker thread): mean and 99th percentile.
    detectors: float
    detectors_p99: float
    detectors_promo: float
    detectors_promo_p99: float
    detectors_skipped: float
    # What stays on the event loop: whether a detector must search (searches_text), per call.
    detectors_check: float
    sha256: float
    pdq_hash_small: float
    pdq_hash_large: float
    near_lookup: dict[int, float]
    # MiB per 100,000 entries: the keyword index's resident memory, the hash lists' arrays.
    keyword_mib: float
    exact_mib: float
    pdq_mib: float
    build_seconds: dict[str, float]


def _rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _per_call(work: Callable[[], object], calls: int) -> float:
    work()
    started = time.perf_counter()
    for _ in range(calls):
        work()
    return (time.perf_counter() - started) / calls


def _p99(work: Callable[[], object], calls: int) -> float:
    """The 99th percentile of single calls' times."""
    work()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return float(np.percentile(times, 99))


def _words(count: int, rng: np.random.Generator) -> tuple[str, ...]:
    lengths = rng.integers(4, 12, size=count)
    letters = rng.choice(_LETTERS, size=int(lengths.sum()))
    cuts = np.cumsum(lengths)[:-1]
    return tuple("".join(word) for word in np.split(letters, cuts))


def _timed(build: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    return build(), time.perf_counter() - started


def _keyword_rss(words: tuple[str, ...]) -> int:
    """Resident memory an index of `words` takes, in the fresh process this runs in (the automaton
    lives in C, out of tracemalloc's sight, and a used process reuses freed memory)."""
    gc.collect()
    before = _rss()
    index = KeywordIndex([KeywordList("spam", "Ad", "block", words)])
    grown = _rss() - before
    del index
    return grown


def _in_fresh_process(words: tuple[str, ...]) -> int:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as fresh:
        return fresh.submit(_keyword_rss, words).result()


def measure_policy(sizes: PolicySizes, seed: int) -> PolicyResult:
    rng = np.random.default_rng(seed)
    words = (*_words(sizes.keywords - 1, rng), "加微信")
    keywords, keyword_s = _timed(lambda: KeywordIndex([KeywordList("spam", "Ad", "block", words)]))
    assert isinstance(keywords, KeywordIndex)
    digests = rng.integers(0, 256, size=(sizes.exact_hashes, 32), dtype=np.uint8)
    exact, exact_s = _timed(
        lambda: ExactList("banned", "deny", "Illegal", [(d.tobytes().hex(), "") for d in digests])
    )
    assert isinstance(exact, ExactList)
    pdq = rng.integers(0, 256, size=(max(sizes.pdq_hashes, *sizes.pdq_sizes), 32), dtype=np.uint8)
    near, pdq_s = _timed(lambda: _near(pdq[: sizes.pdq_hashes]))
    assert isinstance(near, NearList)

    rules = Rules(thresholds=Thresholds({"Porn": ThresholdConfig(review=50, block=80)}), keywords=keywords)
    answer, contact, promo = (
        ModerateImageResponse(
            suggestion=Suggestion.SUGGESTION_PASS,
            label="Normal",
            ocr_results=[OcrResult(scene="OCR", suggestion=Suggestion.SUGGESTION_PASS, text=text)],
        )
        for text in (OCR_TEXT, CONTACT_TEXT, PROMO_TEXT)
    )
    image = encode(photo("astronaut"), "JPEG", quality=85)
    digest = hashlib.sha256(image).digest()

    def text_and_exact() -> None:
        exact.find(digest)
        decide(rules, answer, "bench")

    detectors = Rules(
        detectors=(
            Detector.configured("phone", DetectorConfig(action="review")),
            Detector.configured("url", DetectorConfig(action="block")),
        )
    )
    large = encode(photo("astronaut").resize((2048, 2048)), "JPEG", quality=90)
    lookups = {}
    for size in sizes.pdq_sizes:
        index = near if size == sizes.pdq_hashes else _near(pdq[:size])
        query = PdqHash(rng.integers(0, 256, size=32, dtype=np.uint8).tobytes(), 100)
        lookups[size] = _per_call(lambda index=index, query=query: index.find(query), sizes.calls // 10)  # type: ignore[misc]
    per_100k = 100_000 / 2**20
    # Milliseconds each: a tenth of the calls, enough for a 99th percentile.
    detector_calls = max(sizes.calls // 20, 100)
    return PolicyResult(
        sizes=sizes,
        text_and_exact=_per_call(text_and_exact, sizes.calls),
        keywords=_per_call(lambda: keywords.find(OCR_TEXT), sizes.calls),
        exact=_per_call(lambda: exact.find(digest), sizes.calls),
        detectors=_per_call(lambda: decide(detectors, contact, "bench"), detector_calls),
        detectors_p99=_p99(lambda: decide(detectors, contact, "bench"), detector_calls),
        detectors_promo=_per_call(lambda: decide(detectors, promo, "bench"), detector_calls),
        detectors_promo_p99=_p99(lambda: decide(detectors, promo, "bench"), detector_calls),
        detectors_skipped=_per_call(lambda: decide(detectors, answer, "bench"), sizes.calls),
        detectors_check=_per_call(lambda: searches_text(detectors, contact), sizes.calls),
        sha256=_per_call(lambda: hashlib.sha256(image).digest(), sizes.calls // 10),
        pdq_hash_small=_per_call(lambda: pdq_hash(image), 20),
        pdq_hash_large=_per_call(lambda: pdq_hash(large), 10),
        near_lookup=lookups,
        keyword_mib=_in_fresh_process(words) * per_100k / sizes.keywords,
        exact_mib=exact.nbytes * per_100k / sizes.exact_hashes,
        pdq_mib=near.nbytes * per_100k / sizes.pdq_hashes,
        build_seconds={"keywords": keyword_s, "exact": exact_s, "pdq": pdq_s},
    )


def _near(hashes: np.ndarray) -> NearList:
    return NearList(
        "known_bad", "Illegal", [(h.tobytes().hex(), "") for h in hashes], distance=31, quality=50
    )
