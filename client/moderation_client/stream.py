"""The stream helper's bookkeeping, shared by both client forms.

Items are taken from the caller's iterable only as gRPC asks for the next one, so memory holds just the
items sent and not yet answered (bounded by the gateway's read-ahead window), never the whole input.
When a stream ends with SERVER_DRAINING, the items it left unanswered are carried over and sent first
on the next stream, in their original order; an item is forgotten as soon as its answer arrives.

The server is not trusted to keep the protocol: an answer to an item not sent (or already answered),
an answer with no outcome, or a stream that ends OK before answering every item fails the helper call
with a ModerationError, like any other broken stream, so no item is ever silently left unanswered.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import TypeAlias

import grpc
from moderation.v1.moderation_service_pb2 import (
    ModerateImageRequest,
    ModerateImageResponse,
    StreamModerateImagesRequest,
    StreamModerateImagesResponse,
)

from moderation_client.errors import ModerationError

# One item of the caller's input: a request (its correlation id is then its index, as text), or a
# `(correlation_id, request)` pair.
StreamItem: TypeAlias = ModerateImageRequest | tuple[str, ModerateImageRequest]


@dataclass(frozen=True)
class StreamResult:
    """One item's answer: `index` is its position in the caller's input, whatever stream carried it."""

    index: int
    correlation_id: str
    result: ModerateImageResponse | None
    error: ModerationError | None


@dataclass(frozen=True)
class _Entry:
    index: int
    message: StreamModerateImagesRequest


class InputEnded:
    """Marks the end of the caller's input; `error` is what iterating it raised, if anything."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error


class NeedInput:
    """`StreamLedger.next_message` has nothing to send until the next input item is added."""


NEED_INPUT = NeedInput()


class StreamLedger:
    """Items taken from the caller but not yet answered, across the streams of one helper call.

    Thread-safe: the blocking API reads requests on a gRPC thread while the caller reads answers.
    Each stream's request iterator passes its `stream` number, so an iterator of a stream that has
    ended sends nothing more and whatever it took is carried to the next stream.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outbox: deque[_Entry] = deque()  # to be sent next: carried over, then fresh input
        self._sent: dict[int, _Entry] = {}  # the current stream's index -> entry, while unanswered
        self._stream = 0
        self._stream_index = 0
        self._taken = 0
        self._ended: InputEnded | None = None

    def begin_stream(self) -> int:
        with self._lock:
            return self._stream

    def end_stream(self) -> None:
        """The current stream is over: what it left unanswered goes first on the next one."""
        with self._lock:
            unanswered = sorted(self._sent.values(), key=lambda entry: entry.index)
            self._outbox.extendleft(reversed(unanswered))
            self._sent.clear()
            self._stream_index = 0
            self._stream += 1

    def next_message(self, stream: int) -> StreamModerateImagesRequest | NeedInput | None:
        """The next message for `stream` to send, NEED_INPUT, or None when it should half-close."""
        with self._lock:
            if stream != self._stream:
                return None
            if not self._outbox:
                return None if self._ended else NEED_INPUT
            entry = self._outbox.popleft()
            # The gateway numbers each stream's items from 0, in the order it reads them.
            self._sent[self._stream_index] = entry
            self._stream_index += 1
            return entry.message

    def add_input(self, item: StreamItem | InputEnded) -> None:
        with self._lock:
            if isinstance(item, InputEnded):
                # The first end wins: a failed iterator read again just says it is exhausted.
                self._ended = self._ended or item
                return
            correlation_id, request = item if isinstance(item, tuple) else (str(self._taken), item)
            message = StreamModerateImagesRequest(correlation_id=correlation_id, request=request)
            self._outbox.append(_Entry(self._taken, message))
            self._taken += 1

    def answered(self, answer: StreamModerateImagesResponse) -> StreamResult:
        """The caller's result for `answer`; raises ModerationError when it answers no item in flight."""
        with self._lock:
            entry = self._sent.pop(answer.index, None)
        if entry is None:
            raise _broken(f"the server answered item {answer.index}, which is not awaiting an answer")
        outcome = answer.WhichOneof("outcome")
        if outcome == "result":
            return StreamResult(entry.index, entry.message.correlation_id, answer.result, None)
        if outcome is None:
            error = _broken(f"the server answered item {answer.index} with neither a result nor an error")
        else:
            error = ModerationError.from_status(answer.error)
        return StreamResult(entry.index, entry.message.correlation_id, None, error)

    def stream_ended(self) -> None:
        """The stream ended OK: raises ModerationError unless every item of the input was answered."""
        with self._lock:
            unanswered = len(self._sent) + len(self._outbox)
            if unanswered or self._ended is None:
                left = f"{unanswered} items unanswered" if unanswered else "the input not fully read"
                raise _broken(f"the server ended the stream early, with {left}")

    def raise_input_error(self) -> None:
        """Once every item sent is answered: the caller's input failed, so say so rather than end."""
        if self._ended is not None and self._ended.error is not None:
            raise self._ended.error


def _broken(message: str) -> ModerationError:
    # INTERNAL is gRPC's code for a peer that broke the protocol; like any failed stream, not resent.
    return ModerationError(grpc.StatusCode.INTERNAL, message)
