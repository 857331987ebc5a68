"""The RPC handlers: convert, validate, delegate, map errors. Nothing else lives here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import NoReturn, TypeAlias, TypeVar

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import (
    BatchModerateImagesRequest,
    BatchModerateImagesResponse,
    ModerateImageRequest,
    ModerateImageResponse,
    StreamModerateImagesRequest,
    StreamModerateImagesResponse,
)

from backends.base import Backend
from backends.errors import BackendError
from service import errors
from service.deadlines import Deadline
from service.governor import Priority, RateGovernor
from service.retry import Retrier, RetryPolicy
from service.streaming import Item, Window, aiter_items, answer_concurrently
from service.validation import FieldViolation, ValidationError, validate

log = logging.getLogger(__name__)

MAX_BATCH_ITEMS = 1000
# Per-item answers in a stream must reach the caller before the stream's own deadline ends the call.
STREAM_ITEM_MARGIN = 0.05

Outcome: TypeAlias = ModerateImageResponse | status_pb2.Status
ItemAnswer = TypeVar("ItemAnswer", StreamModerateImagesResponse, BatchModerateImagesResponse)


class ModerationServicer(moderation_service_pb2_grpc.ModerationServiceServicer):
    def __init__(
        self,
        backend: Backend,
        policy: RetryPolicy,
        *,
        backend_timeout: float,
        governor: RateGovernor,
        stream_window: Window,
        max_in_flight: int,
    ) -> None:
        self._backend = backend
        self.governor = governor
        self._retrier = Retrier(backend, policy, governor=governor)
        self._backend_timeout = backend_timeout
        self._stream_window = stream_window
        # Stream and batch items in flight across the whole server.
        self._server_slots = asyncio.Semaphore(max_in_flight)

    async def aclose(self) -> None:
        await self.governor.aclose()

    async def ModerateImage(
        self,
        request: ModerateImageRequest,
        context: grpc.aio.ServicerContext[ModerateImageRequest, ModerateImageResponse],
    ) -> ModerateImageResponse:
        deadline = Deadline.for_call(context.time_remaining(), cap=self._backend_timeout)
        outcome = await self._moderate(request, deadline, Priority.INTERACTIVE)
        if isinstance(outcome, status_pb2.Status):
            await _abort(context, outcome)
        return outcome

    async def StreamModerateImages(
        self,
        request_iterator: AsyncIterator[StreamModerateImagesRequest],
        context: grpc.aio.ServicerContext[StreamModerateImagesRequest, StreamModerateImagesResponse],
    ) -> AsyncIterator[StreamModerateImagesResponse]:
        async for item, outcome in self._answer_items(_stream_items(request_iterator), context):
            yield _item_answer(StreamModerateImagesResponse, item, outcome)

    async def BatchModerateImages(
        self,
        request: BatchModerateImagesRequest,
        context: grpc.aio.ServicerContext[BatchModerateImagesRequest, BatchModerateImagesResponse],
    ) -> AsyncIterator[BatchModerateImagesResponse]:
        if len(request.items) > MAX_BATCH_ITEMS:
            violation = FieldViolation(
                "items",
                f"{len(request.items)} items; a batch holds at most {MAX_BATCH_ITEMS} "
                "(use StreamModerateImages for more)",
                "BATCH_TOO_LARGE",
            )
            await _abort(context, errors.validation_status(ValidationError([violation])))
        items = [
            Item(index, entry.correlation_id, entry.request) for index, entry in enumerate(request.items)
        ]
        async for item, outcome in self._answer_items(aiter_items(items), context):
            yield _item_answer(BatchModerateImagesResponse, item, outcome)

    def _answer_items(
        self, items: AsyncIterator[Item], context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[tuple[Item, Outcome]]:
        async def answer(item: Item) -> Outcome:
            deadline = Deadline.for_call(
                context.time_remaining(), cap=self._backend_timeout, margin=STREAM_ITEM_MARGIN
            )
            return await self._moderate(item.request, deadline, Priority.BATCH)

        return answer_concurrently(items, answer, window=self._stream_window, server_slots=self._server_slots)

    async def _moderate(
        self, request: ModerateImageRequest, deadline: Deadline, priority: Priority
    ) -> Outcome:
        """The result, or the status explaining why there is none. Never raises (but for cancellation)."""
        try:
            validate(request)
            return await self._retrier.moderate(request, deadline, priority)
        except ValidationError as error:
            return errors.validation_status(error)
        except BackendError as error:
            log.warning(
                "backend %s failed after %d attempt(s): %s (upstream code %r, request id %r)",
                self._backend.name,
                error.attempts,
                error.message,
                error.upstream_code,
                error.request_id,
            )
            return errors.backend_status(error, self._backend.name)
        except Exception:
            log.exception("unexpected error while moderating")
            return errors.internal_status()


async def _stream_items(requests: AsyncIterator[StreamModerateImagesRequest]) -> AsyncIterator[Item]:
    index = 0
    async for message in requests:
        yield Item(index, message.correlation_id, message.request)
        index += 1


def _item_answer(message_type: type[ItemAnswer], item: Item, outcome: Outcome) -> ItemAnswer:
    answer = message_type(index=item.index, correlation_id=item.correlation_id)
    if isinstance(outcome, status_pb2.Status):
        answer.error.CopyFrom(outcome)
    else:
        answer.result.CopyFrom(outcome)
    return answer


async def _abort(context: grpc.aio.ServicerContext[object, object], status: status_pb2.Status) -> NoReturn:
    """Ends the call with the status and its details (as the grpc-status-details-bin trailer)."""
    rich = rpc_status.to_status(status)
    await context.abort(rich.code, rich.details, rich.trailing_metadata)
    raise AssertionError("grpc's context.abort() always raises")
