"""Cache keys carry each chain backend's fingerprint: real gateway processes sharing a real redis-server
answer afresh when the backend behind a name changes (its type, its library files, its account)."""

from __future__ import annotations

from pathlib import Path

import redis
from moderation.v1.moderation_service_pb2 import Suggestion

from emulator import EmulatorConfig, ImsEmulator
from emulator.images import make_png
from testbed.local_images import encode, photo
from testbed.redis_server import RedisServer
from tests.support.gateway import SECRET_ID, SECRET_KEY
from tests.support.redis_cache_gateway import VERDICT_KEYS, gateway, moderate
from tests.support.tencent_routes import tencent_routes

PASS, BLOCK = Suggestion.SUGGESTION_PASS, Suggestion.SUGGESTION_BLOCK


def verdict_keys(server: RedisServer) -> list[str]:
    with redis.Redis.from_url(server.url) as client:
        return sorted(key.decode() for key in client.keys(VERDICT_KEYS))


async def test_a_routing_file_that_redefines_a_backend_gets_its_verdict_not_the_old_one(
    emulator: ImsEmulator, redis: RedisServer, tmp_path: Path
) -> None:
    # IMS blocks this image; the local backend passes it (a plain colour, nothing to find).
    image = make_png(256, 256, "IMSEMU:Block:Porn:SexBehavior:95")
    routes = tmp_path / "routes.toml"
    routes.write_text('[backends.main]\ntype = "local"\n\n[default]\nchain = ["main"]\n')
    async with gateway(redis.url, MODERATION_ROUTES=str(routes)) as local:
        first = await moderate(local, image)
        assert (first.suggestion, first.backend, first.cached) == (PASS, "main", False)
        assert (await moderate(local, image)).cached
    routes.write_text(tencent_routes("main", emulator.url))
    async with gateway(
        redis.url,
        MODERATION_ROUTES=str(routes),
        TENCENTCLOUD_SECRET_ID=SECRET_ID,
        TENCENTCLOUD_SECRET_KEY=SECRET_KEY,
    ) as cloud:
        answer = await moderate(cloud, image)
    assert (answer.suggestion, answer.cached) == (BLOCK, False)
    assert emulator.stats.billed == 1


async def test_an_image_added_to_the_deny_library_is_blocked_at_once(
    redis: RedisServer, tmp_path: Path
) -> None:
    image = encode(photo("coffee"))
    deny = tmp_path / "deny"
    deny.mkdir()
    settings = {"MODERATION_BACKEND": "local", "MODERATION_LOCAL_DENY_DIR": str(deny)}
    async with gateway(redis.url, **settings) as before:
        assert (await moderate(before, image)).suggestion == PASS
        assert (await moderate(before, image)).cached
    (deny / "coffee.png").write_bytes(image)
    async with gateway(redis.url, **settings) as after:
        answer = await moderate(after, image)
    assert (answer.suggestion, answer.cached) == (BLOCK, False)


ACCOUNTS = (
    ("AKIDaccountA0123456789abcdef0123", "key-of-account-a-0123456789"),
    ("AKIDaccountB0123456789abcdef0123", "key-of-account-b-0123456789"),
)


async def test_two_accounts_sharing_one_redis_each_ask_their_own(redis: RedisServer) -> None:
    image = make_png(256, 256, "IMSEMU:Review:Ad:Contact:60")
    with ImsEmulator(EmulatorConfig(keys=dict(ACCOUNTS)), host="127.0.0.1", port=0) as emulator:
        answers = []
        for secret_id, secret_key in ACCOUNTS:
            account = {
                "TENCENTCLOUD_SECRET_ID": secret_id,
                "TENCENTCLOUD_SECRET_KEY": secret_key,
                "IMS_ENDPOINT": emulator.url,
            }
            async with gateway(redis.url, **account) as address:
                answers.append(await moderate(address, image))
                assert (await moderate(address, image)).cached
        assert emulator.stats.billed == len(ACCOUNTS)
    assert not any(answer.cached for answer in answers)
    assert answers[0].request_id != answers[1].request_id
    # One namespace per account, named by a hash: no key id in Redis.
    keys = verdict_keys(redis)
    assert len({key.split(":")[3] for key in keys}) == len(ACCOUNTS)
    assert not any("AKID" in key for key in keys)
