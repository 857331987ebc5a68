"""Request bytes that are not a valid protobuf message: INVALID_ARGUMENT on every method, never UNKNOWN.

grpcio calls a method's `request_deserializer` itself, outside any handler, and turns whatever it
raises into UNKNOWN with the exception's class and text in the message, plus an ERROR traceback per
call. `RejectUndecodable` wraps every method's deserializer (the health and reflection services'
too, which their own packages register) so that bytes it cannot parse become the `UNDECODABLE`
marker instead, and wraps the handler to end such a call with INVALID_ARGUMENT (`UNDECODABLE_REQUEST`).
On a client stream the marker ends the input the handler sees, so every message read before it is
still answered; the messages after it are dropped unanswered, and the call ends INVALID_ARGUMENT,
saying how many messages were answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

from google.rpc import status_pb2
from grpc_status import rpc_status

from common.scrub import Scrubber
from service import errors
from service.interceptors import AroundCalls, Behaviour, Context, Deserializer, Method
from service.logs import RateLimitedLog
from service.validation import FieldViolation, ValidationError

__all__ = ["LOG_INTERVAL", "UNDECODABLE", "RejectUndecodable", "undecodable_status"]

log = logging.getLogger(__name__)
# Seconds between two log lines about undecodable requests, whatever their number.
LOG_INTERVAL: Final = 10.0
# Seconds a client stream's messages after an undecodable one are read and dropped before the call
# ends: grpcio's client reports INTERNAL ("Internal error from Core"), not the status the server sent,
# when it is still sending as the call ends (measured by the fuzz test). A finite stream ends first.
DISCARD_SECONDS: Final = 1.0


class _Undecodable:
    def __repr__(self) -> str:
        return "UNDECODABLE"


# What a wrapped deserializer returns for bytes it cannot parse.
UNDECODABLE: Final = _Undecodable()


def undecodable_status(outward: Scrubber, messages_read: int | None = None) -> status_pb2.Status:
    """The fixed INVALID_ARGUMENT for bytes that are not the method's request message."""
    description = "the request bytes are not a valid protobuf message of this method's request type"
    if messages_read is not None:
        description += f"; the {messages_read} messages before it were answered"
    return errors.failure_status(
        ValidationError([FieldViolation("request", description, "UNDECODABLE_REQUEST")]), outward
    )


class RejectUndecodable(AroundCalls):
    """Innermost of the interceptors, so that the deserializer it installs is the one grpc calls."""

    def __init__(self, outward: Scrubber, *, log_interval: float = LOG_INTERVAL) -> None:
        """`outward`: the gateway's scrubber, which the refusals pass like every status."""
        super().__init__()
        self._outward = outward
        self._log = RateLimitedLog(log, "undecodable request bytes refused", interval=log_interval)

    def request_deserializer(self, deserializer: Deserializer) -> Deserializer:
        return _tolerant(deserializer)

    async def around(self, method: Method, behaviour: Behaviour, request: Any, context: Context) -> Any:
        if not method.stream_requests:
            if request is UNDECODABLE:
                await self._refuse(context, method.name, None)
            return await behaviour(request, context)
        reading = _Reading(request)
        response = await behaviour(aiter(reading), context)
        if reading.undecodable:
            await reading.discard_the_rest()
            await self._refuse(context, method.name, reading.messages_read)
        return response

    async def _refuse(self, context: Context, method: str, messages_read: int | None) -> None:
        self._log.record(**{"rpc.method": method})
        rich = rpc_status.to_status(undecodable_status(self._outward, messages_read))
        await context.abort(rich.code, rich.details, rich.trailing_metadata)


def _tolerant(deserializer: Deserializer) -> Deserializer:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        # Whatever parsing raises (protobuf's DecodeError, or anything else from hostile bytes), the
        # bytes are not a request; grpc would report it as UNKNOWN with the exception's text.
        except Exception:
            return UNDECODABLE

    return deserialize


class _Reading:
    """A client stream's input, ended at its first undecodable message."""

    def __init__(self, requests: AsyncIterator[Any]) -> None:
        self._requests = requests
        self.messages_read = 0
        self.undecodable = False

    async def __aiter__(self) -> AsyncIterator[Any]:
        async for message in self._requests:
            if message is UNDECODABLE:
                self.undecodable = True
                return
            self.messages_read += 1
            yield message

    async def discard_the_rest(self) -> None:
        """Reads what the client still sends, unanswered, for at most `DISCARD_SECONDS`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DISCARD_SECONDS):
                async for _ in self._requests:
                    pass
