"""One long `StreamModerateImages` call, and when and how each of its items was answered.

The client keeps no more items unanswered than the gateway reads ahead (its stream window), so the
gateway reads each item as soon as it is sent: the time from sending to the answer is then the time
the gateway promises to keep, not time spent queued in HTTP/2 buffers on the way in.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import StreamModerateImagesRequest, StreamModerateImagesResponse

from bench.soak.errors import scan_call_error
from bench.soak.leaks import ANSWERS, SecretScan
from bench.soak.plan import BACKEND_TIMEOUT
from bench.soak.tally import OK, Tally
from testbed.client import error_label, request
from testbed.stream import drive_stream


@dataclass
class StreamLedger:
    number: int
    # The loop time at which the stream's own deadline expires.
    deadline_at: float = 0.0
    # Loop time each item left the request generator, by index, and its first answer came.
    sent_at: list[float] = field(default_factory=list)
    answered_at: dict[int, float] = field(default_factory=dict)
    # Wall clock minus loop clock, to line the loop times up with the gateway's span times.
    wall_offset: float = 0.0
    answers: Counter[int] = field(default_factory=Counter)
    # Answers whose correlation id is not the one sent at their index.
    misattributed: int = 0
    tally: Tally = field(default_factory=Tally)
    # How the call ended: OK, or the status that ended it.
    ended: str = ""

    @property
    def unanswered(self) -> int:
        return sum(1 for index in range(len(self.sent_at)) if index not in self.answers)

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.answers.values() if count > 1)

    def correlation_id(self, index: int) -> str:
        return f"soak-{self.number}-{index}"


async def run_stream(
    stub: moderation_service_pb2_grpc.ModerationServiceStub,
    ledger: StreamLedger,
    images: Sequence[bytes],
    *,
    count: int,
    window: int,
    timeout: float,
    scan: SecretScan,
) -> None:
    """Streams `count` items, cycling through `images`, at most `window` unanswered at a time."""
    loop = asyncio.get_running_loop()

    def item(index: int) -> StreamModerateImagesRequest:
        correlation_id = ledger.correlation_id(index)
        return StreamModerateImagesRequest(
            correlation_id=correlation_id, request=request(images[index % len(images)], correlation_id)
        )

    def sent(index: int, at: float) -> None:
        ledger.sent_at.append(at)

    def record(answer: StreamModerateImagesResponse, now: float) -> None:
        index = answer.index
        # Results too, not only errors: a secret could as well leak into a verdict's fields.
        scan.scan(ANSWERS, answer.SerializeToString())
        ledger.answers[index] += 1
        if not 0 <= index < len(ledger.sent_at):
            # An answer for an item never sent: it cannot be timed.
            ledger.misattributed += 1
            return
        if answer.correlation_id != ledger.correlation_id(index):
            ledger.misattributed += 1
        if ledger.answers[index] > 1:
            # Counted among the duplicates; the item's outcome and latency are its first answer's.
            return
        ledger.answered_at[index] = now
        outcome = error_label(answer.error) if answer.HasField("error") else OK
        sent_at = ledger.sent_at[index]
        # The gateway answers an item by the backend timeout after reading it, or just before the
        # stream's deadline, whichever comes first.
        limit = min(sent_at + BACKEND_TIMEOUT, ledger.deadline_at) - sent_at
        ledger.tally.record(outcome, now - sent_at, limit)

    ledger.wall_offset = time.time() - loop.time()
    ledger.deadline_at = loop.time() + timeout
    error = await drive_stream(
        stub.StreamModerateImages, item, count, record, timeout=timeout, window=window, on_sent=sent
    )
    if error is None:
        ledger.ended = OK
    else:
        ledger.ended = f"{error.code().name}: {error.details()}"
        scan_call_error(scan, error)
