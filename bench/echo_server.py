"""Bare grpc.aio servers of the moderation contract, the floors the gateway is measured against
(`make bench --only efficiency`):

- **echo**: decodes each request and answers a fixed verdict: what receiving the same messages costs
  with nothing done about them.
- **one exchange** (`--forward URL`): the same, plus what any IMS gateway on grpc.aio and aiohttp must
  do per call and nothing else: the image base64-encoded into an IMS-shaped JSON body, that body's
  SHA-256 (TC3 signs it), one POST of it through one pooled aiohttp session, and its answer read whole
  (not parsed: the emulator refuses the unsigned request, and the verdict stays fixed).

`python -m bench.echo_server PORT [--forward URL]` prints `serving` once it listens on 127.0.0.1:PORT,
and runs until its stdin closes or it is terminated.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from collections.abc import Awaitable, Callable

import aiohttp
import grpc
import pybase64
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse, Suggestion

from testbed.client import MAX_MESSAGE_BYTES

ANSWER = ModerateImageResponse(suggestion=Suggestion.SUGGESTION_PASS, label="Normal", backend="echo")

Answer = Callable[
    [ModerateImageRequest, grpc.aio.ServicerContext[ModerateImageRequest, ModerateImageResponse]],
    Awaitable[ModerateImageResponse],
]


async def _answer(
    request: ModerateImageRequest,
    context: grpc.aio.ServicerContext[ModerateImageRequest, ModerateImageResponse],
) -> ModerateImageResponse:
    return ANSWER


def _forwarding(session: aiohttp.ClientSession, url: str) -> Answer:
    async def answer(
        request: ModerateImageRequest,
        context: grpc.aio.ServicerContext[ModerateImageRequest, ModerateImageResponse],
    ) -> ModerateImageResponse:
        image = pybase64.b64encode(request.content)
        body = b'{"BizType":"floor","DataId":"floor","FileContent":"%s"}' % image
        hashlib.sha256(body).digest()
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
            await response.read()
        return ANSWER

    return answer


def _handler(answer: Answer) -> grpc.GenericRpcHandler:
    # ModerateImage only, decoded by the generated message class as the gateway's server decodes it.
    return grpc.method_handlers_generic_handler(
        "moderation.v1.ModerationService",
        {
            "ModerateImage": grpc.unary_unary_rpc_method_handler(
                answer,
                request_deserializer=ModerateImageRequest.FromString,
                response_serializer=ModerateImageResponse.SerializeToString,
            )
        },
    )


async def serve(port: int, forward: str | None) -> None:
    async with aiohttp.ClientSession() as session:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
        server.add_generic_rpc_handlers(
            (_handler(_answer if forward is None else _forwarding(session, forward)),)
        )
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("serving", flush=True)
        # Until the bench closes our stdin (or terminates us).
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await server.stop(None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--forward", help="the URL each call POSTs its IMS-shaped body to")
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.port, arguments.forward))
