"""`python -m tests.flood PORT CALLS CONNECTIONS TOKEN`: another process floods a gateway with unary calls.

Prints one JSON object, the count of each outcome (`OK`, or the error's code and ErrorInfo reason).
A separate process, as an attacker is: its client work does not share the gateway's event loop.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest

from emulator.images import make_png


def _outcome(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    info = error_details_pb2.ErrorInfo()
    if status is not None and status.details and status.details[0].Unpack(info):
        return f"{error.code().name}:{info.reason}"
    return str(error.code().name)


async def flood(port: int, calls: int, connections: int, token: str) -> Counter[str]:
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(connections)]
    request = ModerateImageRequest(content=make_png(256, 256))
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    outcomes: Counter[str] = Counter()

    async def one(index: int) -> None:
        stub = moderation_service_pb2_grpc.ModerationServiceStub(channels[index % connections])
        try:
            await stub.ModerateImage(request, timeout=60, metadata=metadata)
            outcomes["OK"] += 1
        except grpc.aio.AioRpcError as error:
            outcomes[_outcome(error)] += 1

    await asyncio.gather(*(one(i) for i in range(calls)))
    for channel in channels:
        await channel.close()
    return outcomes


if __name__ == "__main__":
    port, calls, connections = (int(a) for a in sys.argv[1:4])
    print(json.dumps(asyncio.run(flood(port, calls, connections, sys.argv[4] if len(sys.argv) > 4 else ""))))
