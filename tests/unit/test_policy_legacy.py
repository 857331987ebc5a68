"""The local backend's deprecated policy settings fold into the gateway's policy: its policy file stands in
for a missing MODERATION_POLICY_FILE, its keyword libraries become keyword lists of every BizType, and its
sample folders image lists (exact allow, near-duplicate deny)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from opentelemetry import metrics

from common.scrub import Scrubber
from service.policy.gate import PolicyGate
from service.policy.legacy import LocalSources
from service.policy.loading import PolicySource, load_policy
from service.policy.metrics import PolicyMetrics
from service.policy.pdq import pdq_hash
from service.policy.reload import PolicyWatcher
from service.settings import ConfigError, load_settings
from testbed.local_images import encode, near_duplicates, photo

LEGACY = """
[default.thresholds]
Porn = { review = 0, block = 101 }
Ad = { review = 50, block = 101 }

[biz_types.strict]
checks = ["porn", "ocr"]
thresholds.Ad = { review = 50, block = 90 }

[biz_types.lenient]
thresholds.Ad = { review = 101, block = 101 }
"""


def legacy_files(folder: Path) -> tuple[Path, Path]:
    policy = folder / "local_policy.toml"
    policy.write_text(LEGACY, encoding="utf-8")
    keywords = folder / "keywords"
    keywords.mkdir()
    (keywords / "ads.toml").write_text(
        'id = "ads"\nname = "Advertising"\nlabel = "Ad"\nwords = ["加微信", "free money", "..."]\n',
        encoding="utf-8",
    )
    return policy, keywords


def test_the_local_policy_file_and_keyword_libraries_become_the_gateway_s_policy(tmp_path: Path) -> None:
    policy, keywords = legacy_files(tmp_path)
    settings = load_settings(
        {
            "MODERATION_BACKEND": "local",
            "MODERATION_LOCAL_POLICY": str(policy),
            "MODERATION_LOCAL_KEYWORDS": str(keywords),
        }
    )
    assert settings.policy_source == PolicySource(
        policy,
        LocalSources(policy, keywords, None, None, ("MODERATION_LOCAL_POLICY", "MODERATION_LOCAL_KEYWORDS")),
    )
    folded = settings.policy
    assert folded is not None
    assert folded.files == (policy, keywords / "ads.toml")
    # Each BizType's list takes the action its threshold for the label gave a hit (scored 100).
    hits = {
        biz_type: folded.rules(biz_type).keywords.find("请 加-微-信")  # type: ignore[union-attr]
        for biz_type in ("default", "strict")
    }
    assert {b: (h.list.name, h.list.action, h.entry) for b, h in hits.items() if h} == {
        "default": ("ads", "review", "加微信"),
        "strict": ("ads", "block", "加微信"),
    }
    # A label its thresholds never flag: the library is not a list of that BizType.
    assert folded.rules("lenient").keywords is None
    assert folded.rules("default").thresholds.judge("Porn", "", 3) is not None


def test_the_gateway_s_policy_file_wins_and_still_takes_the_keyword_libraries(tmp_path: Path) -> None:
    legacy, keywords = legacy_files(tmp_path)
    gateway = tmp_path / "policy.toml"
    gateway.write_text("[default.thresholds]\nPorn = { review = 50, block = 80 }\n", encoding="utf-8")
    settings = load_settings(
        {
            "MODERATION_BACKEND": "local",
            "MODERATION_POLICY_FILE": str(gateway),
            "MODERATION_LOCAL_POLICY": str(legacy),
            "MODERATION_LOCAL_KEYWORDS": str(keywords),
        }
    )
    source = settings.policy_source
    assert source is not None
    assert source.file == gateway
    assert source.local is not None
    assert settings.policy is not None
    assert settings.policy.version == load_policy(gateway, local=source.local).version
    hit = settings.policy.default.keywords.find("free money")  # type: ignore[union-attr]
    # No threshold for Ad here: the local backend's own, 50/90, blocked a hit.
    assert hit is not None
    assert hit.list.action == "block"


def test_routed_local_backends_that_name_different_policies_are_refused(tmp_path: Path) -> None:
    first, second = tmp_path / "a.toml", tmp_path / "b.toml"
    for path in (first, second):
        path.write_text("", encoding="utf-8")
    routes = tmp_path / "routes.toml"
    routes.write_text(
        f'[backends.a]\ntype = "local"\npolicy_file = "{first}"\n'
        f'[backends.b]\ntype = "local"\npolicy_file = "{second}"\n'
        '[default]\nchain = ["a", "b"]\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings({"MODERATION_ROUTES": str(routes)})
    assert caught.value.problems == [
        "backends.a.policy_file and backends.b.policy_file name different files: the gateway has one policy"
    ]


def test_a_bad_keyword_library_is_a_start_up_problem_naming_the_setting(tmp_path: Path) -> None:
    keywords = tmp_path / "keywords"
    keywords.mkdir()
    (keywords / "bad.toml").write_text('id = "bad"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings({"MODERATION_BACKEND": "local", "MODERATION_LOCAL_KEYWORDS": str(keywords)})
    (problem,) = caught.value.problems
    assert problem.startswith(f"MODERATION_LOCAL_KEYWORDS: {keywords / 'bad.toml'}: needs id, name, label")


def test_sample_folders_become_an_exact_allow_list_and_near_duplicate_deny_lists(tmp_path: Path) -> None:
    allow, deny = tmp_path / "allow", tmp_path / "deny"
    (deny / "Porn").mkdir(parents=True)
    allow.mkdir()
    (allow / "coffee-sample.png").write_bytes(allowed := encode(photo("coffee"), "PNG"))
    photo("chelsea").save(deny / "Porn" / "cat-sample.png")
    photo("rocket").save(deny / "rocket-sample.png")
    policy = load_policy(None, local=LocalSources(None, None, allow, deny, ()))
    rules = policy.rules("any_biz_type")
    assert [(e.name, e.kind) for e in rules.exact_lists] == [("local_allow", "allow")]
    assert sorted((n.name, n.label) for n in rules.near_lists) == [
        ("local_deny.Deny", "Deny"),
        ("local_deny.Porn", "Porn"),
    ]
    exact = rules.exact_lists[0]
    hit = exact.find(hashlib.sha256(allowed).digest())
    assert hit is not None
    assert (hit.kind, hit.entry) == ("allow", "coffee-sample")

    def near(content: bytes) -> list[tuple[str, str]]:
        hashed = pdq_hash(content)
        assert hashed is not None
        return [(h.list_name, h.entry) for n in rules.near_lists if (h := n.find(hashed)) is not None]

    for variant in ("half", "double", "jpeg_q40"):
        assert near(encode(near_duplicates(photo("chelsea"))[variant])) == [("local_deny.Porn", "cat-sample")]
    # A near-duplicate of an allow sample is not allowed (nor denied): only its exact bytes are.
    copy = encode(near_duplicates(photo("coffee"))["jpeg_q40"])
    assert exact.find(hashlib.sha256(copy).digest()) is None
    assert near(copy) == []
    assert near(encode(photo("astronaut"))) == []


async def test_an_edited_keyword_library_is_reloaded_like_the_policy_s_own_files(tmp_path: Path) -> None:
    _, keywords = legacy_files(tmp_path)
    source = PolicySource(None, LocalSources(None, keywords, None, None, ("MODERATION_LOCAL_KEYWORDS",)))
    gate = PolicyGate(source.load(), PolicyMetrics(metrics.get_meter("test"), Scrubber()))
    watcher = PolicyWatcher(source, gate)
    before = gate.policy.version
    assert gate.policy.default.keywords.find("bonus code") is None  # type: ignore[union-attr]
    (keywords / "ads.toml").write_text(
        'id = "ads"\nname = "Advertising"\nlabel = "Ad"\nwords = ["bonus code"]\n', encoding="utf-8"
    )
    await watcher.check()
    assert gate.policy.version != before
    hit = gate.policy.default.keywords.find("your BONUS-CODE")  # type: ignore[union-attr]
    assert hit is not None
    assert (hit.list.name, hit.entry) == ("ads", "bonus code")
