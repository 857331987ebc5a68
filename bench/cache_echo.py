"""`python -m bench.cache_echo PORT ANSWER_HEX`: a bare grpc.aio server answering every
`ModerateImage` with one fixed answer, the one the gateway's cache gives for the bench's image. The hit
path's yardstick: the same messages over the same gRPC stack, with nothing done in between. Prints
`ready` once serving."""

from __future__ import annotations

import asyncio
import sys

import grpc
from moderation.v1 import moderation_service_pb2
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse

from testbed.client import MAX_MESSAGE_BYTES

SERVICE_NAME = moderation_service_pb2.DESCRIPTOR.services_by_name["ModerationService"].full_name


def echo_handler(answer: ModerateImageResponse) -> grpc.GenericRpcHandler:
    async def moderate(request: ModerateImageRequest, context: object) -> ModerateImageResponse:
        echoed = ModerateImageResponse()
        echoed.CopyFrom(answer)
        echoed.data_id = request.data_id
        return echoed

    method = grpc.unary_unary_rpc_method_handler(
        moderate,
        request_deserializer=ModerateImageRequest.FromString,
        response_serializer=ModerateImageResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, {"ModerateImage": method})


async def serve(port: int, answer: ModerateImageResponse) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
    server.add_generic_rpc_handlers((echo_handler(answer),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    # Until stdin closes (the bench ends) or SIGTERM.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(0)


def main() -> None:
    port = int(sys.argv[1])
    answer = ModerateImageResponse.FromString(bytes.fromhex(sys.argv[2]))
    asyncio.run(serve(port, answer))


if __name__ == "__main__":
    main()
