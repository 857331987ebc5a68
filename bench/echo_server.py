"""A bare grpc.aio server of the moderation contract: it decodes each request and answers a fixed verdict.

The floor the gateway is measured against (`make bench --only efficiency`): what receiving the same
messages costs with nothing done about them. `python -m bench.echo_server PORT` prints `serving` once
it listens on 127.0.0.1:PORT, and runs until its stdin closes or it is terminated.
"""

from __future__ import annotations

import asyncio
import sys

import grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse, Suggestion

from testbed.client import MAX_MESSAGE_BYTES

ANSWER = ModerateImageResponse(suggestion=Suggestion.SUGGESTION_PASS, label="Normal", backend="echo")


async def _answer(
    request: ModerateImageRequest,
    context: grpc.aio.ServicerContext[ModerateImageRequest, ModerateImageResponse],
) -> ModerateImageResponse:
    return ANSWER


# ModerateImage only, decoded by the generated message class as the gateway's server decodes it.
HANDLER = grpc.method_handlers_generic_handler(
    "moderation.v1.ModerationService",
    {
        "ModerateImage": grpc.unary_unary_rpc_method_handler(
            _answer,
            request_deserializer=ModerateImageRequest.FromString,
            response_serializer=ModerateImageResponse.SerializeToString,
        )
    },
)


async def serve(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
    server.add_generic_rpc_handlers((HANDLER,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("serving", flush=True)
    # Until the bench closes our stdin (or terminates us).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(None)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
