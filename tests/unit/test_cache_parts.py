"""The verdict cache's parts on their own: keys, the LRU, the cost metrics' names."""

from __future__ import annotations

import pytest
from moderation.v1.moderation_service_pb2 import Device, ModerateImageRequest, User
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest

from backends.base import Billing, Fingerprint
from common.scrub import Scrubber
from service.cache import Bypass, KeyPolicy, MemoryLru, cache_key
from service.image_hash import HASH_OFF_LOOP_BYTES, ImageHash
from service.observe import CostMetrics

POLICY = KeyPolicy("1", urls=False)
CLOUD_URL = "https://ims.tencentcloudapi.com/"
CLOUD = Fingerprint.of("tencent", CLOUD_URL, account="AKID-a")
ONPREM = Fingerprint.of("private", "https://ims.internal/")
CHAIN = (CLOUD,)


async def key(request: ModerateImageRequest, **changes: object) -> str | Bypass:
    policy = KeyPolicy(str(changes.pop("version", "1")), urls=bool(changes.pop("urls", False)))
    chain = changes.pop("chain", CHAIN)
    assert isinstance(chain, tuple)
    user_fields = bool(changes.pop("user_fields", False))
    return await cache_key(request, chain, policy, ImageHash(request.content), user_fields=user_fields)


async def test_every_field_that_can_change_a_verdict_changes_the_key() -> None:
    base = ModerateImageRequest(content=b"image bytes", biz_type="chat", data_id="a")
    changed = []
    for name, value in (
        ("biz_tag", "x"),
        ("interval", 2),
        ("max_frames", 3),
        ("type", 2),
        ("content", b"image byteZ"),
        ("biz_type", "chats"),
    ):
        request = ModerateImageRequest()
        request.CopyFrom(base)
        setattr(request, name, value)
        changed.append(await key(request))
    variants = [
        await key(base, version="2"),
        await key(base, chain=(ONPREM,)),
        await key(base, chain=(CLOUD, ONPREM)),
        await key(base, chain=(Fingerprint.of("tencent", CLOUD_URL, account="AKID-b"),)),
        await key(base, chain=(Fingerprint.of("tencent", "https://ims.intl.example/", account="AKID-a"),)),
        *changed,
    ]
    original = await key(base)
    assert len({original, *variants}) == len(variants) + 1
    # data_id is the caller's own: not part of the key.
    assert await key(ModerateImageRequest(content=b"image bytes", biz_type="chat", data_id="b")) == original


async def test_no_two_field_sets_spell_the_same_key() -> None:
    assert await key(ModerateImageRequest(content=b"x", biz_type="ab", biz_tag="c")) != await key(
        ModerateImageRequest(content=b"x", biz_type="a", biz_tag="bc")
    )


async def test_large_images_are_hashed_off_the_loop_to_the_same_key() -> None:
    content = bytes(range(256)) * (HASH_OFF_LOOP_BYTES // 256 + 1)
    large = await key(ModerateImageRequest(content=content))
    assert large == await key(ModerateImageRequest(content=content))
    assert large != await key(ModerateImageRequest(content=content[:-1]))


@pytest.mark.parametrize(
    "request_",
    [
        ModerateImageRequest(content=b"x", user=User(user_id="u")),
        ModerateImageRequest(content=b"x", device=Device()),
    ],
)
async def test_user_and_device_bypass_unless_the_route_opts_in(request_: ModerateImageRequest) -> None:
    assert await key(request_) is Bypass.USER_FIELDS
    opted_in = await key(request_, user_fields=True)
    # The user's fields are not part of the key: the route said they change nothing.
    assert opted_in == await key(ModerateImageRequest(content=b"x"))


async def test_urls_are_keyed_only_when_the_operator_opts_in() -> None:
    request = ModerateImageRequest(url="https://cdn.example/a.png")
    assert await key(request) is Bypass.URL
    keyed = await key(request, urls=True)
    assert isinstance(keyed, str)
    assert keyed != await key(ModerateImageRequest(url="https://cdn.example/b.png"), urls=True)


def test_the_lru_drops_the_least_recently_used_and_the_expired() -> None:
    now = [0.0]
    lru = MemoryLru(2, clock=lambda: now[0])
    lru.put("a", b"1", ttl=10)
    lru.put("b", b"2", ttl=1)
    assert lru.get("a") == b"1"
    lru.put("c", b"3", ttl=10)
    assert (lru.get("b"), lru.get("a"), lru.get("c")) == (None, b"1", b"3")
    now[0] = 10.0
    assert (lru.get("a"), lru.get("c"), len(lru)) == (None, None, 0)
    lru.put("never", b"0", ttl=0)
    assert lru.get("never") is None


def test_the_cost_metrics_keep_their_prometheus_names() -> None:
    registry = CollectorRegistry()
    provider = MeterProvider(
        metric_readers=[PrometheusMetricReader(registry=registry, scope_info_enabled=False)]
    )
    costs = CostMetrics(provider.get_meter("test"), outward=Scrubber())
    price = Billing(price_per_10k=25).per_call
    costs.billed_call("tencent", "chat", price)
    costs.billed_call("tencent", "chat", price)
    costs.hit("memory")
    costs.coalesced("fleet")
    costs.miss()
    costs.bypassed("store_unavailable")
    lines = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in generate_latest(registry).decode().splitlines()
        if line.startswith("moderation_")
    }
    labels = 'backend="tencent",biz_type="chat",caller=""'
    assert lines == {
        f"moderation_billed_calls_total{{{labels}}}": 2,
        f"moderation_estimated_cost_cny_total{{{labels}}}": 0.005,
        'moderation_cache_hits_total{moderation_store="memory"}': 1,
        'moderation_cache_coalesced_total{moderation_scope="fleet"}': 1,
        "moderation_cache_misses_total": 1,
        "moderation_billed_calls_saved_total": 2,
        'moderation_cache_bypassed_total{moderation_reason="store_unavailable"}': 1,
    }


async def test_keys_are_namespaced_by_the_first_backends_hashed_account() -> None:
    request = ModerateImageRequest(content=b"image bytes")
    cloud = await key(request)
    assert isinstance(cloud, str)
    namespace, _, digest = cloud.partition(":")
    assert namespace == CLOUD.account
    assert len(namespace) == 32
    assert "AKID" not in cloud
    assert len(digest) == 64
    assert str(await key(request, chain=(ONPREM, CLOUD))).startswith("no-account:")


def test_a_fingerprint_hashes_the_account_and_changes_with_every_part() -> None:
    base = Fingerprint.of("tencent", "https://a/", "ap-guangzhou", account="AKID-a")
    assert "AKID" not in repr(base)
    assert base == Fingerprint.of("tencent", "https://a/", "ap-guangzhou", account="AKID-a")
    others = {
        Fingerprint.of("private", "https://a/", "ap-guangzhou", account="AKID-a"),
        Fingerprint.of("tencent", "https://b/", "ap-guangzhou", account="AKID-a"),
        Fingerprint.of("tencent", "https://a/", "ap-beijing", account="AKID-a"),
        Fingerprint.of("tencent", "https://a/", "ap-guangzhou", account="AKID-b"),
        Fingerprint.of("tencent", "https://a/", "ap-guangzhou"),
    }
    assert len({base.digest, *(other.digest for other in others)}) == len(others) + 1
    assert Fingerprint.of("local").account == ""
