"""Calls that send raw bytes, not protobuf messages, to any method a gateway serves, and read raw answers:
for the tests of what a request that no message type parses gets."""

from __future__ import annotations

import grpc

# Field 1 as a length-delimited record claiming more bytes than follow: no message type parses it.
UNDECODABLE = b"\x0a\xff\xff\xff\xff\x0f"
SERVICE = "/moderation.v1.ModerationService"
UNARY_METHODS = [f"{SERVICE}/ModerateImage", "/grpc.health.v1.Health/Check"]
SERVER_STREAM_METHODS = [f"{SERVICE}/BatchModerateImages", "/grpc.health.v1.Health/Watch"]
BIDI_METHODS = [
    f"{SERVICE}/StreamModerateImages",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
]
EVERY_METHOD = [*UNARY_METHODS, *SERVER_STREAM_METHODS, *BIDI_METHODS]


def as_is(data: bytes) -> bytes:
    """The serializer of a raw call: the bytes as they are."""
    return data


async def call_raw(
    channel: grpc.aio.Channel, method: str, messages: list[bytes], timeout: float = 10
) -> list[bytes]:
    """Sends `messages` as they are to `method` and returns the raw answers; raises the call's error."""
    codec = {"request_serializer": as_is, "response_deserializer": as_is}
    if method in UNARY_METHODS:
        return [await channel.unary_unary(method, **codec)(messages[0], timeout=timeout)]
    if method in SERVER_STREAM_METHODS:
        return [
            answer async for answer in channel.unary_stream(method, **codec)(messages[0], timeout=timeout)
        ]
    return [
        answer async for answer in channel.stream_stream(method, **codec)(iter(messages), timeout=timeout)
    ]
