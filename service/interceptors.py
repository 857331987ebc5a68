"""One dispatch for the four RPC shapes, shared by the gateway's server interceptors.

grpc hands an interceptor a method's handler in one of four shapes (a request or a stream of them, a
response or a stream of them), each with its own attribute and factory. `AroundCalls` reads the shape
once per method, builds the wrapper once per method (not per call: a cache hit's whole cost is a few
hundred microseconds), and leaves its subclass one seam: `around`, which runs each call and runs the
method's behaviour inside it. To `around` every behaviour is a coroutine: a streaming method's
responses are written with `context.write` (grpc's other style for them), whichever style it has.
"""

from __future__ import annotations

import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc

__all__ = ["AroundCalls", "Behaviour", "Context", "Deserializer", "Method"]

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
# Answers a request (or a stream of them): returns the response, or None once it has written a
# streaming method's responses.
Behaviour: TypeAlias = Callable[[Any, Context], Awaitable[Any]]
Deserializer: TypeAlias = Callable[[bytes], Any] | None
Continuation: TypeAlias = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]]

_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


@dataclass(frozen=True, slots=True)
class Method:
    """A method as grpc routes to it: `/package.Service/Method`, and its shape."""

    name: str
    stream_requests: bool
    stream_responses: bool


class AroundCalls(grpc.aio.ServerInterceptor, ABC):  # type: ignore[misc]
    """An interceptor that runs `around` each call of every method but those of `skip_services`."""

    def __init__(self, *, skip_services: Iterable[str] = ()) -> None:
        self._skipped = tuple(f"/{service}/" for service in skip_services)
        # Each method's handler as grpc found it, and what this interceptor returns for it. Only
        # registered methods are kept (an unknown one has no handler), so the map stays small.
        self._wrappers: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    @abstractmethod
    async def around(self, method: Method, behaviour: Behaviour, request: Any, context: Context) -> Any:
        """Runs one call: returns what `await behaviour(request, context)` returns, or aborts the call.
        `request` is an async iterator of the requests when `method.stream_requests`."""

    def request_deserializer(self, deserializer: Deserializer) -> Deserializer:
        """The deserializer grpc runs on each request's bytes, before any handler: the method's own
        unless a subclass says otherwise."""
        return deserializer

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        name = handler_call_details.method
        known = self._wrappers.get(name)
        if known is not None and known[0] is handler:
            return known[1]
        wrapper = handler if name.startswith(self._skipped) else self._wrapped(handler, name)
        self._wrappers[name] = (handler, wrapper)
        return wrapper

    def _wrapped(self, handler: grpc.RpcMethodHandler, name: str) -> grpc.RpcMethodHandler:
        method = Method(name, bool(handler.request_streaming), bool(handler.response_streaming))
        behaviour = (
            handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
        )
        if method.stream_responses and not inspect.iscoroutinefunction(behaviour):
            behaviour = _writing(behaviour)
        # A partial, not a closure: one coroutine fewer per call. grpc asks on every call whether it is
        # a coroutine function (anything else it would run in a thread), and `inspect` sees through a
        # partial of a plain function at the cost of a plain function; of a bound method, 1 µs more.
        call = functools.partial(type(self).around, self, method, behaviour)
        return _FACTORIES[method.stream_requests, method.stream_responses](
            call,
            request_deserializer=self.request_deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


def _writing(behaviour: Callable[[Any, Context], AsyncIterator[Any]]) -> Behaviour:
    """A streaming method's async generator as a coroutine that writes its responses."""

    async def write(request: Any, context: Context) -> None:
        async for response in behaviour(request, context):
            await context.write(response)

    return write
