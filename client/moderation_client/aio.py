"""`ModerationClient`: the gateway's client on grpc.aio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from types import TracebackType

import grpc
from moderation.v1.moderation_service_pb2 import (
    ModerateImageRequest,
    ModerateImageResponse,
    StreamModerateImagesRequest,
)

from moderation_client.base import HEALTH_TIMEOUT, ClientBase
from moderation_client.errors import ModerationError, ServerUnreachable
from moderation_client.health import HealthCheckRequest, status_name
from moderation_client.stream import NEED_INPUT, InputEnded, StreamItem, StreamLedger, StreamResult


class ModerationClient(ClientBase):
    """`async with ModerationClient("localhost:50051") as client: await client.moderate(request)`."""

    _grpc = grpc.aio

    async def __aenter__(self) -> ModerationClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def wait_until_ready(self, timeout: float) -> None:
        """Connects now; raises ServerUnreachable when the connection fails or takes over `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                state = self._channel.get_state(try_to_connect=True)
                while state != grpc.ChannelConnectivity.READY:
                    if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                        raise ServerUnreachable("the connection failed")
                    await self._channel.wait_for_state_change(state)
                    state = self._channel.get_state(try_to_connect=True)
        except TimeoutError:
            raise ServerUnreachable(f"no connection within {timeout:g} s") from None

    async def health(self, service: str = "", *, timeout: float = HEALTH_TIMEOUT) -> str:
        """The server's grpc.health.v1 status for `service` ("": the whole server), e.g. SERVING.

        Raises ModerationError when the check fails (UNAVAILABLE at once when nothing listens).
        """
        try:
            response = await self._health_check(
                HealthCheckRequest(service=service), timeout=timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise ModerationError.from_rpc_error(exc) from None
        return status_name(response)

    async def moderate(
        self, request: ModerateImageRequest, *, timeout: float | None = None
    ) -> ModerateImageResponse:
        """One ModerateImage call; raises ModerationError. `timeout` overrides the client's."""
        budget = self._call_budget(timeout)
        while True:
            try:
                response: ModerateImageResponse = await self._stub.ModerateImage(
                    request, timeout=budget.attempt_timeout(), metadata=self._metadata
                )
                return response
            except grpc.aio.AioRpcError as exc:
                delay = budget.retry_delay(ModerationError.from_rpc_error(exc))
            await asyncio.sleep(delay)

    async def moderate_stream(
        self, items: AsyncIterable[StreamItem] | Iterable[StreamItem], *, timeout: float | None = None
    ) -> AsyncIterator[StreamResult]:
        """Yields each item's StreamResult as it completes, through StreamModerateImages.

        Items are read from `items` as the gateway asks for them. A stream ended by SERVER_DRAINING is
        followed by a new one carrying the items left unanswered; any other stream failure raises
        ModerationError (the items not yet yielded got no answer). `timeout` overrides the client's
        stream deadline, which covers every stream of this call.
        """
        budget = self._stream_budget(timeout)
        ledger = StreamLedger()
        source = _SharedSource(items)
        try:
            while True:
                stream = ledger.begin_stream()
                call = self._stub.StreamModerateImages(
                    _requests(ledger, stream, source), timeout=budget.remaining(), metadata=self._metadata
                )
                try:
                    async for answer in call:
                        yield ledger.answered(answer)
                    ledger.stream_ended()
                    break
                except grpc.aio.AioRpcError as exc:
                    ledger.end_stream()
                    delay = budget.resend_delay(ModerationError.from_rpc_error(exc))
                finally:
                    call.cancel()
                await asyncio.sleep(delay)
        finally:
            source.cancel()
        ledger.raise_input_error()


async def _requests(
    ledger: StreamLedger, stream: int, source: _SharedSource
) -> AsyncIterator[StreamModerateImagesRequest]:
    while (message := ledger.next_message(stream)) is not None:
        if message is NEED_INPUT:
            ledger.add_input(await source.next())
        else:
            assert isinstance(message, StreamModerateImagesRequest)
            yield message


class _SharedSource:
    """The caller's items, read by one task at a time and never lost to a cancelled reader.

    gRPC cancels a finished stream's request reader, possibly while it waits for the caller's next
    item. Cancelling that wait would throw into the caller's async generator and end it, so the read
    runs in a task of its own, and whichever reader comes next collects its item.
    """

    def __init__(self, items: AsyncIterable[StreamItem] | Iterable[StreamItem]) -> None:
        self._items = aiter(items) if isinstance(items, AsyncIterable) else _async(items)
        self._reading: asyncio.Task[StreamItem | InputEnded] | None = None

    async def next(self) -> StreamItem | InputEnded:
        while True:
            if self._reading is None:
                self._reading = asyncio.ensure_future(self._read())
            reading = self._reading
            await asyncio.wait({reading})
            if self._reading is reading:  # nobody else collected it meanwhile
                self._reading = None
                return reading.result()

    async def _read(self) -> StreamItem | InputEnded:
        try:
            return await anext(self._items)
        except StopAsyncIteration:
            return InputEnded()
        except Exception as exc:
            return InputEnded(exc)

    def cancel(self) -> None:
        if self._reading is not None:
            self._reading.cancel()


async def _async(items: Iterable[StreamItem]) -> AsyncIterator[StreamItem]:
    for item in items:
        yield item
