"""Redis answering in the wrong shape is "Redis unavailable": the cache is bypassed, never an error.

A fake Redis on a real socket speaks malformed RESP to a real gateway process; a real redis-server
holds a corrupt value. Either way every call is answered by the backend, nothing wrong reaches the
in-process LRU, and the image answers normally once the value is gone, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
import redis
from moderation.v1.moderation_service_pb2 import ModerateImageResponse, Suggestion

from emulator import ImsEmulator
from emulator.images import make_png
from testbed.redis_server import RedisServer
from tests.support.gateway import SECRET_ID, SECRET_KEY
from tests.support.redis_cache_gateway import VERDICT_KEYS, gateway, gateway_process, moderate

# Bytes for one command (its words), or None to hang up without answering.
Answer = Callable[[list[bytes]], bytes | None]
VERDICT = ModerateImageResponse(suggestion=Suggestion.SUGGESTION_PASS, label="Normal").SerializeToString()


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def to_scripts(reply: bytes | None) -> Answer:
    """`reply` to every script call (the store's only commands)."""
    return lambda command: reply


def hello_ok(command: list[bytes]) -> bytes:
    return b"+OK\r\n"


class FakeRedis:
    """A TCP server reading RESP commands and answering each as `answer` says."""

    def __init__(self, answer: Answer) -> None:
        self._answer = answer
        self.commands: list[str] = []
        self.port = 0

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
            while command := await _command(reader):
                self.commands.append(command[0].decode().upper())
                answer = self._answer(command)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        writer.close()


async def _command(reader: asyncio.StreamReader) -> list[bytes]:
    header = await reader.readline()
    if not header:
        return []
    words = []
    for _ in range(int(header[1:])):
        size = int((await reader.readline())[1:])
        words.append((await reader.readexactly(size + 2))[:-2])
    return words


@pytest.mark.parametrize(
    ("answer", "url_options"),
    [
        # Short: a hit without its value and TTL, or a reply cut off.
        (to_scripts(b"*1\r\n:1\r\n"), ""),
        (to_scripts(b"*3\r\n:1\r\n"), ""),
        (to_scripts(b"*0\r\n"), ""),
        # A bad TTL: none, or not a number.
        (to_scripts(b"*3\r\n:1\r\n" + bulk(VERDICT) + b":-1\r\n"), ""),
        (to_scripts(b"*3\r\n:1\r\n" + bulk(VERDICT) + bulk(b"soon")), ""),
        # A value that is not a verdict: not a message, an empty one, a number.
        (to_scripts(b"*3\r\n:1\r\n" + bulk(b"\xff\xfe not a verdict") + b":60000\r\n"), ""),
        (to_scripts(b"*3\r\n:1\r\n" + bulk(b"") + b":60000\r\n"), ""),
        (to_scripts(b"*3\r\n:1\r\n:7\r\n:60000\r\n"), ""),
        # Another reply entirely: a status, an unknown status number, an unknown RESP type.
        (to_scripts(b"+OK\r\n"), ""),
        (to_scripts(b"*1\r\n:5\r\n"), ""),
        (to_scripts(b"?what\r\n"), ""),
        # RESP3's HELLO answered as if it were RESP2's AUTH.
        (hello_ok, "?protocol=3"),
    ],
    ids=[
        "short-hit",
        "cut-off",
        "empty-array",
        "no-ttl",
        "ttl-not-a-number",
        "value-not-a-message",
        "value-empty",
        "value-a-number",
        "status-reply",
        "unknown-claim",
        "unknown-resp-type",
        "hello-ok",
    ],
)
async def test_a_malformed_reply_bypasses_the_cache(answer: Answer, url_options: str) -> None:
    fake = FakeRedis(answer)
    image = make_png(256, 256)
    async with (
        fake.serving(),
        gateway_process(f"redis://127.0.0.1:{fake.port}/0{url_options}", MODERATION_BACKEND="local") as (
            address,
            process,
        ),
    ):
        first = await moderate(address, image)
        # The backend's own verdict went into the LRU, not what Redis said.
        second = await moderate(address, image)
    assert fake.commands, "the gateway never asked the fake Redis"
    assert (first.suggestion, first.backend, first.cached) == (Suggestion.SUGGESTION_PASS, "local", False)
    assert (second.suggestion, second.cached) == (Suggestion.SUGGESTION_PASS, True)
    output = process.stdout.read() if process.stdout else ""
    assert "verdict cache: Redis unreachable" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("corrupt", ["value", "ttl"])
async def test_a_corrupt_value_in_redis_is_bypassed_and_forgotten_once_deleted(
    emulator: ImsEmulator, redis: RedisServer, corrupt: str
) -> None:
    image = make_png(256, 256, "IMSEMU:Block:Porn:SexBehavior:95")
    account = {
        "TENCENTCLOUD_SECRET_ID": SECRET_ID,
        "TENCENTCLOUD_SECRET_KEY": SECRET_KEY,
        "IMS_ENDPOINT": emulator.url,
    }
    async with gateway(redis.url, **account) as first:
        assert not (await moderate(first, image)).cached
    with redis_client(redis) as client:
        (key,) = client.keys(VERDICT_KEYS)
        if corrupt == "value":
            client.set(key, b"not a verdict", keepttl=True)
        else:
            client.persist(key)
    async with gateway(redis.url, **account) as second:
        bypassed = await moderate(second, image)
        with redis_client(redis) as client:
            client.flushall()
        after = await moderate(second, image)
    assert (bypassed.suggestion, bypassed.cached) == (Suggestion.SUGGESTION_BLOCK, False)
    assert after.suggestion == Suggestion.SUGGESTION_BLOCK
    assert emulator.stats.billed == 2


def redis_client(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url)
