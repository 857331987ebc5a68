"""`python -m bench.flood PORT CALLS CONNECTIONS [TOKEN] [--biz-type B] [--deadline S]`: another process
floods a gateway with unary calls.

Prints one JSON object, the count of each outcome (`OK`, `CODE:REASON` with the error's ErrorInfo
reason, or a bare `CODE` when it carried none). A separate process, as an attacker is: its client work
shares neither the gateway's event loop nor that of whoever measures the gateway meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


async def flood(
    port: int, calls: int, connections: int, token: str, *, biz_type: str = "", deadline: float = 60.0
) -> Counter[str]:
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(connections)]
    request = ModerateImageRequest(content=make_png(256, 256), biz_type=biz_type)
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    outcomes: Counter[str] = Counter()

    async def one(index: int) -> None:
        stub = moderation_service_pb2_grpc.ModerationServiceStub(channels[index % connections])
        try:
            await stub.ModerateImage(request, timeout=deadline, metadata=metadata)
            outcomes["OK"] += 1
        except grpc.aio.AioRpcError as error:
            outcomes[_outcome(error)] += 1

    await asyncio.gather(*(one(i) for i in range(calls)))
    for channel in channels:
        await channel.close()
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("calls", type=int)
    parser.add_argument("connections", type=int)
    parser.add_argument("token", nargs="?", default="")
    parser.add_argument("--biz-type", default="")
    parser.add_argument("--deadline", type=float, default=60.0)
    args = parser.parse_args()
    outcomes = flood(
        args.port, args.calls, args.connections, args.token, biz_type=args.biz_type, deadline=args.deadline
    )
    print(json.dumps(asyncio.run(outcomes)))


if __name__ == "__main__":
    main()
