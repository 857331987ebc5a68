"""The attacks of the hostile benchmark: each sends what an attacker would and returns the codes it got.

A code is the gRPC status name, or a word in capitals that no gateway should ever cause:
`LEAKED_INTERNALS` (a message naming an exception class), `NO_ERROR_INFO` (an error without its
google.rpc.ErrorInfo) or `UNANSWERED` (a stream item that got no answer).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Sequence

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from moderation.v1.moderation_service_pb2 import (
    ModerateImageRequest,
    ModerateImageResponse,
    StreamModerateImagesRequest,
    StreamModerateImagesResponse,
)

from bench.hostile import CLOUD_BIZ_TYPE, HOSTILE_BIZ_TYPE, Attack, Target, serve_bomb
from emulator.images import make_png
from testbed import bombs
from testbed.client import CODE_NAMES
from testbed.stream import drive_stream

_SERVICE = "/moderation.v1.ModerationService"
# Every method a caller can reach, by its kind of call.
_UNARY = (f"{_SERVICE}/ModerateImage", "/grpc.health.v1.Health/Check")
_SERVER_STREAMING = (f"{_SERVICE}/BatchModerateImages", "/grpc.health.v1.Health/Watch")
_BIDI = (f"{_SERVICE}/StreamModerateImages", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
# Not a protobuf: a field number 0 and a length running past the end.
UNDECODABLE = b"\x00\xff\xff\xff\xff\x0f garbage"
_INTERNAL_NAMES = re.compile(r"(Error|Exception|Traceback|TaskGroup)\b")
IMAGE = make_png(256, 256)
FLOOD_CALLS = 2000
FLOOD_DEADLINE = 10.0
FLOOD_CONNECTIONS = 40


def _outcome(error: grpc.aio.AioRpcError, secrets: Sequence[str] = ()) -> str:
    """The code, unless the error leaks a secret or internals, or lacks the ErrorInfo every gateway
    error carries."""
    shown = f"{error.details()} {error.trailing_metadata()}"
    if any(secret in shown for secret in secrets):
        return "LEAKED_SECRET"
    if _INTERNAL_NAMES.search(error.details() or ""):
        return "LEAKED_INTERNALS"
    if error.code() in {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}:
        return str(error.code().name)
    status = rpc_status.from_call(error)
    has_info = status is not None and any(
        d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR) for d in status.details
    )
    return str(error.code().name) if has_info else "NO_ERROR_INFO"


async def _unary(target: Target, request: ModerateImageRequest, deadline: float = 10.0) -> str:
    async with target.channel() as channel:
        return await _call(channel, target, request, deadline)


async def _call(
    channel: grpc.aio.Channel, target: Target, request: ModerateImageRequest, deadline: float
) -> str:
    method = channel.unary_unary(
        f"{_SERVICE}/ModerateImage",
        request_serializer=ModerateImageRequest.SerializeToString,
        response_deserializer=ModerateImageResponse.FromString,
    )
    secrets = (target.credentials.secret_id, target.credentials.secret_key)
    try:
        answer = await method(request, timeout=deadline, metadata=target.attacker)
    except grpc.aio.AioRpcError as error:
        return _outcome(error, secrets)
    return "LEAKED_SECRET" if any(s in str(answer) for s in secrets) else "OK"


async def undecodable_bytes(target: Target) -> Sequence[str]:
    """Bytes that are not a protobuf, to every method: unary, server-streaming and bidirectional."""
    codes = []
    async with target.channel() as channel:
        for path in _UNARY:
            try:
                await channel.unary_unary(path)(UNDECODABLE, timeout=5, metadata=target.attacker)
                codes.append("OK")
            except grpc.aio.AioRpcError as error:
                codes.append(_outcome(error))
        for path in _SERVER_STREAMING:
            call = channel.unary_stream(path)(UNDECODABLE, timeout=5, metadata=target.attacker)
            codes.append(await _drain(call))
        for path in _BIDI:
            call = channel.stream_stream(path)(iter([UNDECODABLE]), timeout=5, metadata=target.attacker)
            codes.append(await _drain(call))
    return codes


async def _drain(call: grpc.aio.Call) -> str:
    try:
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as error:
        return _outcome(error)
    return "OK"


async def idna_hosts(target: Target) -> Sequence[str]:
    hosts = ("xn--a", "a..b", "a" * 64 + ".example")
    return [await _unary(target, ModerateImageRequest(url=f"http://{host}/x.png")) for host in hosts]


async def long_url(target: Target) -> Sequence[str]:
    """A 4 KB URL: the error quoting it must still arrive whole, ErrorInfo included."""
    url = "http://example.com/" + "a" * 4000
    return [await _unary(target, ModerateImageRequest(url=url, data_id="x" * 64, biz_type="b" * 32))]


async def flood(target: Target, *, connections: int) -> Sequence[str]:
    """`FLOOD_CALLS` unary calls at once through the tencent route, over `connections` channels, from
    another process (`bench.flood`): the flood's client work must not slow this process's canaries."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.flood",
        target.address.rpartition(":")[2],
        str(FLOOD_CALLS),
        str(connections),
        target.attacker_token,
        "--biz-type",
        CLOUD_BIZ_TYPE,
        "--deadline",
        str(FLOOD_DEADLINE),
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await process.communicate()
    counts: dict[str, int] = json.loads(stdout)
    return [_flood_code(outcome) for outcome, count in counts.items() for _ in range(count)]


def _flood_code(outcome: str) -> str:
    """`CODE:REASON` is a mapped error; a bare code carried no ErrorInfo (unless it needs none)."""
    code, has_reason, _ = outcome.partition(":")
    return code if has_reason or code in {"OK", "DEADLINE_EXCEEDED", "CANCELLED"} else "NO_ERROR_INFO"


async def stream_flood(target: Target) -> Sequence[str]:
    """Twenty streams of a hundred items at once over one connection: each item must get one answer."""
    async with target.channel() as channel:
        return [
            code
            for codes in await asyncio.gather(*(_stream(channel, target) for _ in range(20)))
            for code in codes
        ]


async def _stream(channel: grpc.aio.Channel, target: Target, items: int = 100) -> list[str]:
    method = channel.stream_stream(
        f"{_SERVICE}/StreamModerateImages",
        request_serializer=StreamModerateImagesRequest.SerializeToString,
        response_deserializer=StreamModerateImagesResponse.FromString,
    )

    def item(index: int) -> StreamModerateImagesRequest:
        return StreamModerateImagesRequest(
            correlation_id=str(index), request=ModerateImageRequest(content=IMAGE, biz_type=CLOUD_BIZ_TYPE)
        )

    codes: dict[int, str] = {}

    def record(answer: StreamModerateImagesResponse, now: float) -> None:
        codes[answer.index] = "OK" if answer.WhichOneof("outcome") == "result" else _item_code(answer)

    error = await drive_stream(method, item, items, record, timeout=60, metadata=target.attacker)
    ended = "UNANSWERED" if error is None else _outcome(error)
    return [*codes.values(), *([ended] * (items - len(codes)))]


def _item_code(answer: StreamModerateImagesResponse) -> str:
    return str(CODE_NAMES.get(answer.error.code, "UNKNOWN"))


async def hostile_upstream(target: Target, mode: str, *, deadline: float = 10.0) -> Sequence[str]:
    """Two calls at once to a backend answering in `mode` (emulator/hostile.py)."""
    target.hostile.config.hostile = mode
    request = ModerateImageRequest(content=IMAGE, biz_type=HOSTILE_BIZ_TYPE)
    try:
        return await two_at_once(target, request, deadline)
    finally:
        target.hostile.config.hostile = ""


async def two_at_once(target: Target, request: ModerateImageRequest, deadline: float = 10.0) -> Sequence[str]:
    async with target.channel() as channel:
        return await asyncio.gather(*(_call(channel, target, request, deadline) for _ in range(2)))


def _bomb(name: str, request: ModerateImageRequest, mapped: frozenset[str]) -> Attack:
    return Attack(name, lambda target: two_at_once(target, request), mapped)


def _url_bomb(target: Target) -> Awaitable[Sequence[str]]:
    return two_at_once(target, ModerateImageRequest(url=f"{target.files_url}{URL_BOMB_PATH}"))


def _upstream(mode: str, mapped: frozenset[str], deadline: float = 10.0) -> Attack:
    return Attack(f"upstream {mode}", lambda t: hostile_upstream(t, mode, deadline=deadline), mapped)


_ANY_REFUSAL = frozenset({"OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "UNAVAILABLE"})

URL_BOMB_PATH = "/bomb.png"
serve_bomb(URL_BOMB_PATH, bombs.pixel_bomb_png())
_REFUSED = frozenset({"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"})

ATTACKS = [
    _bomb(
        "2 GIFs of 10,000 frames, interval 1",
        ModerateImageRequest(content=bombs.frame_flood_gif(), interval=1, max_frames=10_000),
        frozenset({"OK"}),
    ),
    _bomb("2 WEBPs declaring 9999x8948", ModerateImageRequest(content=bombs.pixel_bomb_webp()), _REFUSED),
    _bomb(
        "2 TIFFs, second page 12000x12000",
        ModerateImageRequest(content=bombs.tall_second_page_tiff(), interval=1, max_frames=2),
        _REFUSED,
    ),
    Attack("2 URLs of a 12000x12000 PNG", _url_bomb, _REFUSED),
    Attack("undecodable bytes, every method", undecodable_bytes, frozenset({"INVALID_ARGUMENT", "INTERNAL"})),
    Attack("idna-invalid hosts", idna_hosts, frozenset({"INVALID_ARGUMENT"})),
    # A valid URL of the 4 KB maximum that cannot be downloaded here: the error quoting it must arrive whole.
    Attack("4 KB URL", long_url, frozenset({"INVALID_ARGUMENT", "FAILED_PRECONDITION"})),
    Attack(
        f"{FLOOD_CALLS} calls, one connection",
        lambda target: flood(target, connections=1),
        _ANY_REFUSAL,
    ),
    Attack(
        f"{FLOOD_CALLS} calls, {FLOOD_CONNECTIONS} connections",
        lambda target: flood(target, connections=FLOOD_CONNECTIONS),
        _ANY_REFUSAL,
    ),
    Attack("20 streams of 100, one connection", stream_flood, _ANY_REFUSAL - {"UNAVAILABLE"}),
    # IMS rejects with a code the gateway does not retry: an upstream "failure" of the caller's request.
    _upstream(
        "echo_headers", frozenset({"INVALID_ARGUMENT", "INTERNAL", "FAILED_PRECONDITION", "UNAVAILABLE"})
    ),
    _upstream("echo_headers_result", frozenset({"OK"})),
    _upstream("huge_body", frozenset({"UNAVAILABLE"})),
    _upstream("deep_json", frozenset({"UNAVAILABLE"})),
    _upstream("slow_drip", frozenset({"DEADLINE_EXCEEDED"}), deadline=3.0),
]
