"""`SyncModerationClient`: the gateway's client on the blocking grpc API."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
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


class SyncModerationClient(ClientBase):
    """`with SyncModerationClient("localhost:50051") as client: client.moderate(request)`.

    The same options and behaviour as ModerationClient, for code without an event loop.
    """

    _grpc = grpc

    def __enter__(self) -> SyncModerationClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def wait_until_ready(self, timeout: float) -> None:
        """Connects now; raises ServerUnreachable when no connection is made within `timeout`."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise ServerUnreachable(f"no connection within {timeout:g} s") from None

    def health(self, service: str = "", *, timeout: float = HEALTH_TIMEOUT) -> str:
        """The server's grpc.health.v1 status; see ModerationClient.health."""
        try:
            response = self._health_check(
                HealthCheckRequest(service=service), timeout=timeout, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise ModerationError.from_rpc_error(exc) from None
        return status_name(response)

    def moderate(
        self, request: ModerateImageRequest, *, timeout: float | None = None
    ) -> ModerateImageResponse:
        """One ModerateImage call; raises ModerationError. `timeout` overrides the client's."""
        budget = self._call_budget(timeout)
        while True:
            try:
                response: ModerateImageResponse = self._stub.ModerateImage(
                    request, timeout=budget.attempt_timeout(), metadata=self._metadata
                )
                return response
            except grpc.RpcError as exc:
                delay = budget.retry_delay(ModerationError.from_rpc_error(exc))
            time.sleep(delay)

    def moderate_stream(
        self, items: Iterable[StreamItem], *, timeout: float | None = None
    ) -> Iterator[StreamResult]:
        """Yields each item's StreamResult as it completes; see ModerationClient.moderate_stream."""
        budget = self._stream_budget(timeout)
        ledger = StreamLedger()
        source = _LockedSource(items)
        while True:
            stream = ledger.begin_stream()
            call = self._stub.StreamModerateImages(
                _requests(ledger, stream, source), timeout=budget.remaining(), metadata=self._metadata
            )
            try:
                for answer in call:
                    yield ledger.answered(answer)
                ledger.stream_ended()
                break
            except grpc.RpcError as exc:
                ledger.end_stream()
                delay = budget.resend_delay(ModerationError.from_rpc_error(exc))
            finally:
                call.cancel()
            time.sleep(delay)
        ledger.raise_input_error()


def _requests(
    ledger: StreamLedger, stream: int, source: _LockedSource
) -> Iterator[StreamModerateImagesRequest]:
    while (message := ledger.next_message(stream)) is not None:
        if message is NEED_INPUT:
            source.read_into(ledger)
        else:
            assert isinstance(message, StreamModerateImagesRequest)
            yield message


class _LockedSource:
    """The caller's items, read by one gRPC thread at a time.

    A finished stream's request thread may still be reading the caller's next item while the next
    stream's thread asks for one; the lock keeps the two reads apart, and the item read is handed to
    the ledger before the lock is released, so the end of input is never seen ahead of it.
    """

    def __init__(self, items: Iterable[StreamItem]) -> None:
        self._items = iter(items)
        self._lock = threading.Lock()

    def read_into(self, ledger: StreamLedger) -> None:
        with self._lock:
            try:
                item: StreamItem | InputEnded = next(self._items)
            except StopIteration:
                item = InputEnded()
            except Exception as exc:
                item = InputEnded(exc)
            ledger.add_input(item)
