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
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status

from service import errors
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


def undecodable_status(messages_read: int | None = None) -> status_pb2.Status:
    """The fixed INVALID_ARGUMENT for bytes that are not the method's request message."""
    description = "the request bytes are not a valid protobuf message of this method's request type"
    if messages_read is not None:
        description += f"; the {messages_read} messages before it were answered"
    return errors.failure_status(
        ValidationError([FieldViolation("request", description, "UNDECODABLE_REQUEST")])
    )


class RejectUndecodable(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Innermost of the interceptors, so that the deserializer it installs is the one grpc calls."""

    def __init__(self, *, log_interval: float = LOG_INTERVAL) -> None:
        self._log = RateLimitedLog(log, "undecodable request bytes refused", interval=log_interval)
        # Each method's handler as grpc found it, and its wrapper: built once, not on every call. Only
        # registered methods are kept (an unknown one has no handler), so the map stays small.
        self._wrappers: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        known = self._wrappers.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapper = _wrapped(handler, method, self._refuse)
        self._wrappers[method] = (handler, wrapper)
        return wrapper

    async def _refuse(
        self, context: grpc.aio.ServicerContext[Any, Any], method: str, messages_read: int | None
    ) -> None:
        self._log.record(**{"rpc.method": method})
        rich = rpc_status.to_status(undecodable_status(messages_read))
        await context.abort(rich.code, rich.details, rich.trailing_metadata)


Refuse = Callable[[grpc.aio.ServicerContext[Any, Any], str, int | None], Awaitable[None]]


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
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


async def _responses(behaviour: AsyncIterator[Any] | Awaitable[None]) -> AsyncIterator[Any]:
    """A streaming handler's responses, whichever of grpc's two styles it has: an async generator,
    or a coroutine that writes them with `context.write` (the health service's Watch)."""
    if isinstance(behaviour, AsyncIterator):
        async for response in behaviour:
            yield response
    else:
        await behaviour


def _wrapped(handler: grpc.RpcMethodHandler, method: str, refuse: Refuse) -> grpc.RpcMethodHandler:
    serializers = {
        "request_deserializer": _tolerant(handler.request_deserializer),
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        unary_unary = handler.unary_unary

        async def unary_to_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if request is UNDECODABLE:
                await refuse(context, method, None)
            return await unary_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_to_unary, **serializers)
    if handler.unary_stream:
        unary_stream = handler.unary_stream

        async def unary_to_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            if request is UNDECODABLE:
                await refuse(context, method, None)
            async for response in _responses(unary_stream(request, context)):
                yield response

        return grpc.unary_stream_rpc_method_handler(unary_to_stream, **serializers)
    if handler.stream_unary:
        stream_unary = handler.stream_unary

        async def stream_to_unary(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            reading = _Reading(requests)
            response = await stream_unary(aiter(reading), context)
            if reading.undecodable:
                await reading.discard_the_rest()
                await refuse(context, method, reading.messages_read)
            return response

        return grpc.stream_unary_rpc_method_handler(stream_to_unary, **serializers)
    stream_stream = handler.stream_stream

    async def stream_to_stream(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        reading = _Reading(requests)
        async for response in _responses(stream_stream(aiter(reading), context)):
            yield response
        if reading.undecodable:
            await reading.discard_the_rest()
            await refuse(context, method, reading.messages_read)

    return grpc.stream_stream_rpc_method_handler(stream_to_stream, **serializers)
