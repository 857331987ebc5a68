"""Sequential unary `ModerateImage` calls, timed one by one."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from moderation.v1 import moderation_service_pb2_grpc

from bench.percentile import percentile
from testbed.client import Metadata, request

# IMS's own service timeout: a unary call never legitimately takes longer.
CALL_TIMEOUT = 15.0


@dataclass
class LatencySample:
    seconds: list[float] = field(default_factory=list)
    # Calls that ended with an error status; they have no latency in `seconds`.
    failures: int = 0

    def percentile(self, share: float) -> float:
        """NaN when no call succeeded."""
        return percentile(self.seconds, share)


async def sample_unary(
    stub: moderation_service_pb2_grpc.ModerationServiceStub,
    image: bytes,
    count: int,
    *,
    prefix: str,
    stop: Callable[[], bool] = lambda: False,
    metadata: Metadata = (),
) -> LatencySample:
    """Up to `count` calls one after another, fewer if `stop()` turns true; `metadata` goes with each."""
    sample = LatencySample()
    for index in range(count):
        if stop():
            break
        started = time.perf_counter()
        try:
            await stub.ModerateImage(
                request(image, f"{prefix}-{index}"), timeout=CALL_TIMEOUT, metadata=metadata
            )
        except grpc.aio.AioRpcError:
            sample.failures += 1
            continue
        sample.seconds.append(time.perf_counter() - started)
    return sample
