"""A real gRPC ModerationService on loopback that breaks the protocol on purpose, for the client's tests.

Each `Misbehaviour` is one way a server can lie to the client library and the `moderate` command:
streams that end OK early, answers to items never sent or already answered, statuses whose details do
not decode, retry delays of a billion seconds, and escape sequences in every string it returns. The
test sets `server.misbehaviour` and points a client (or the CLI, as a subprocess) at `server.address`.
"""

from __future__ import annotations

import asyncio
import enum
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from contextlib import asynccontextmanager, contextmanager

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from moderation.v1 import moderation_service_pb2 as pb
from moderation.v1.moderation_service_pb2_grpc import (
    ModerationServiceServicer,
    add_ModerationServiceServicer_to_server,
)
from moderation_client.errors import DOMAIN, SERVER_DRAINING, STATUS_DETAILS_KEY

# A terminal escape (clear screen, red), a bell and a right-to-left override: raw, they rewrite the
# terminal a table is shown on.
ESCAPES = "\x1b[2J\x1b[31mPorn\x07\u202e"
# RetryInfo's delay when the server wants the client parked: about 31 years.
FOREVER = duration_pb2.Duration(seconds=10**9)


class Misbehaviour(enum.Enum):
    HONEST = "honest"  # answers every item PASS, as the gateway would
    ENDS_EARLY = "ends_early"  # answers the first item of a stream, then ends it OK
    REPEATS_AN_INDEX = "repeats_an_index"  # answers item 0 twice
    UNKNOWN_INDEX = "unknown_index"  # answers an item never sent
    NO_OUTCOME = "no_outcome"  # an answer with neither result nor error
    GARBAGE_DETAILS = "garbage_details"  # statuses whose details do not decode or contradict the status
    ESCAPES = "escapes"  # labels, backend and request id full of control characters
    DRAINS_FOREVER = "drains_forever"  # the first stream ends SERVER_DRAINING, "retry in 10^9 s"


def _detail(message: error_details_pb2.ErrorInfo | error_details_pb2.RetryInfo) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def garbage_status() -> status_pb2.Status:
    """An INVALID_ARGUMENT whose ErrorInfo and RetryInfo are not what their type URLs say."""
    info_url = _detail(error_details_pb2.ErrorInfo()).type_url
    retry_url = _detail(error_details_pb2.RetryInfo()).type_url
    return status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT,
        message="garbage details",
        details=[
            any_pb2.Any(type_url=info_url, value=b"\xff\xff\xff"),
            any_pb2.Any(type_url=retry_url, value=b"\x0a"),
        ],
    )


def draining_status() -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason=SERVER_DRAINING, domain=DOMAIN)
    retry = error_details_pb2.RetryInfo(retry_delay=FOREVER)
    return status_pb2.Status(
        code=code_pb2.UNAVAILABLE, message="draining", details=[_detail(info), _detail(retry)]
    )


def answer(misbehaviour: Misbehaviour) -> pb.ModerateImageResponse:
    if misbehaviour is Misbehaviour.ESCAPES:
        return pb.ModerateImageResponse(
            suggestion=pb.SUGGESTION_BLOCK,
            label=ESCAPES,
            sub_label=ESCAPES,
            score=99,
            backend=ESCAPES,
            request_id=ESCAPES,
        )
    return pb.ModerateImageResponse(suggestion=pb.SUGGESTION_PASS, label="Normal", backend="hostile")


class HostileModeration(ModerationServiceServicer):
    def __init__(self) -> None:
        self.misbehaviour = Misbehaviour.HONEST
        self.streams = 0  # streams opened

    async def ModerateImage(
        self, request: pb.ModerateImageRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModerateImageResponse:
        if self.misbehaviour is Misbehaviour.GARBAGE_DETAILS:
            # Trailers that are not a google.rpc.Status, then one that names another code than the call's.
            trailer = b"\xff\xfe not a status" if request.content.startswith(b"a") else garbage_status()
            value = trailer if isinstance(trailer, bytes) else trailer.SerializeToString()
            trailers = ((STATUS_DETAILS_KEY, value),)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "garbage trailers", trailers)
        return answer(self.misbehaviour)

    async def StreamModerateImages(
        self, requests: AsyncIterator[pb.StreamModerateImagesRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamModerateImagesResponse]:
        self.streams += 1
        misbehaviour = self.misbehaviour
        if misbehaviour is Misbehaviour.DRAINS_FOREVER and self.streams == 1:
            # Every item read and none answered, so the client sends them all again. Read to the end
            # first: grpc.aio reports a status that ends a stream mid-write as INTERNAL.
            async for _ in requests:
                pass
            status = draining_status()
            trailers = ((STATUS_DETAILS_KEY, status.SerializeToString()),)
            await context.abort(grpc.StatusCode.UNAVAILABLE, status.message, trailers)
        index = 0
        async for item in requests:
            if misbehaviour is Misbehaviour.UNKNOWN_INDEX:
                index += 100
            if misbehaviour is Misbehaviour.GARBAGE_DETAILS:
                error = garbage_status()
                # An error item with code OK, and one with a code gRPC does not have.
                error.code = (0, 999, code_pb2.INVALID_ARGUMENT)[index % 3]
                yield pb.StreamModerateImagesResponse(
                    index=index, correlation_id=item.correlation_id, error=error
                )
            elif misbehaviour is Misbehaviour.NO_OUTCOME:
                yield pb.StreamModerateImagesResponse(index=index, correlation_id=item.correlation_id)
            else:
                result = answer(misbehaviour)
                yield pb.StreamModerateImagesResponse(
                    index=index, correlation_id=item.correlation_id, result=result
                )
            if misbehaviour is Misbehaviour.REPEATS_AN_INDEX:
                yield pb.StreamModerateImagesResponse(
                    index=index, correlation_id=item.correlation_id, result=result
                )
            if misbehaviour is Misbehaviour.ENDS_EARLY:
                return
            index += 1

    async def BatchModerateImages(
        self, request: pb.BatchModerateImagesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.BatchModerateImagesResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the client library does not use it")
        # abort raises; the yield makes this the streaming handler the base class declares.
        yield pb.BatchModerateImagesResponse()

    async def GetUsage(
        self, request: pb.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetUsageResponse:
        return pb.GetUsageResponse()

    async def SubmitModeration(
        self, request: pb.SubmitModerationRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitModerationResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no tasks here")
        raise AssertionError("abort raises")

    async def GetModerationTask(
        self, request: pb.GetModerationTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModerationTask:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no tasks here")
        raise AssertionError("abort raises")


class HostileServer:
    def __init__(self, server: grpc.aio.Server, port: int, health: health_aio.HealthServicer) -> None:
        self.address = f"127.0.0.1:{port}"
        self.servicer = HostileModeration()
        self.health = health
        add_ModerationServiceServicer_to_server(self.servicer, server)

    @property
    def misbehaviour(self) -> Misbehaviour:
        return self.servicer.misbehaviour

    @misbehaviour.setter
    def misbehaviour(self, value: Misbehaviour) -> None:
        self.servicer.misbehaviour = value

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set("", status)


@asynccontextmanager
async def hostile_server() -> AsyncIterator[HostileServer]:
    """The hostile service and a standard health service, on 127.0.0.1 and a free port."""
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    hostile = HostileServer(server, port, health)
    await hostile.set_serving(True)
    await server.start()
    try:
        yield hostile
    finally:
        await server.stop(grace=None)


@contextmanager
def hostile_server_thread() -> Iterator[HostileServer]:
    """The same server on an event loop of its own thread, for the blocking client's tests."""
    started: Future[tuple[HostileServer, asyncio.AbstractEventLoop, asyncio.Event]] = Future()

    async def serve() -> None:
        stop = asyncio.Event()
        async with hostile_server() as server:
            started.set_result((server, asyncio.get_running_loop(), stop))
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="hostile-server")
    thread.start()
    server, loop, stop = started.result(timeout=10)
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
