"""The RPC handlers: convert, validate, delegate, answer. Observation lives in `service.observe`."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import (
    BatchModerateImagesRequest,
    BatchModerateImagesResponse,
    GetModerationTaskRequest,
    GetUsageRequest,
    GetUsageResponse,
    ModerateImageRequest,
    ModerateImageResponse,
    ModerationTask,
    StreamModerateImagesRequest,
    StreamModerateImagesResponse,
    SubmitModerationRequest,
    SubmitModerationResponse,
)
from opentelemetry import context as otel_context
from opentelemetry import trace

from backends.image_limits import ImageLimits
from common.scrub import Scrubber
from service import errors
from service.admission import Admission, Ticket, caller_key
from service.cache import VerdictCache
from service.deadlines import Deadline
from service.fitting.stage import Fit, Fitting
from service.governor import Priority
from service.image_hash import ImageHash
from service.intake import Intake, IntakeSlot
from service.observe import Observer, Outcome
from service.policy.gate import PolicyGate
from service.quotas.usage import UsageRpc
from service.routing import Route, Router
from service.streaming import Item, ReadingStopped, Window, aiter_items, answer_concurrently
from service.tasks.rpc import TaskRpc
from service.telemetry import Telemetry
from service.validation import FieldViolation, ValidationError, validate, validate_fields

MAX_BATCH_ITEMS = 1000
# Kept back from a stream item's budget (the stream's deadline, or the backend timeout from reading
# it): a client that sends its whole window at once has its last items read up to ~150 ms after it
# sent them on a busy 2-core gateway, and answers queue behind each other on the way out (bench.soak).
STREAM_ITEM_MARGIN = 0.25

ItemAnswer = TypeVar("ItemAnswer", StreamModerateImagesResponse, BatchModerateImagesResponse)


class ModerationServicer(moderation_service_pb2_grpc.ModerationServiceServicer):
    def __init__(
        self,
        router: Router,
        *,
        cache: VerdictCache | None = None,
        backend_timeout: float,
        stream_window: Window,
        max_in_flight: int,
        admission: Admission,
        telemetry: Telemetry,
        stream_idle_timeout: float | None = None,
        policy: PolicyGate | None = None,
        usage: UsageRpc | None = None,
        fitting: Fitting | None = None,
    ) -> None:
        self._policy = policy
        self._router = router
        self._usage = usage or UsageRpc(None, telemetry.outward)
        self._fitting = fitting
        self._cache = cache
        self._admission = admission
        self._telemetry = telemetry
        self._stream_idle_timeout = stream_idle_timeout
        # Set when the server begins to shut down: streams stop reading, answer what they read, and end.
        self._draining = asyncio.Event()
        self._tracer = telemetry.tracer
        self._observer = Observer(telemetry.metrics, telemetry.outward)
        self._backend_timeout = backend_timeout
        self._stream_window = stream_window
        # Stream and batch items in flight across the whole server: a cap; the intake follows the budget.
        self._server_slots = asyncio.Semaphore(max_in_flight)
        self._intake = Intake(
            router.intake_limit, router.intake_weight, router.paced_by.governor.interactive_share
        )
        self._tasks: TaskRpc | None = None

    def serve_tasks(self, tasks: TaskRpc) -> None:
        """SubmitModeration and GetModerationTask answer through `tasks`, built on `moderate_task`."""
        self._tasks = tasks

    async def moderate_task(
        self, request: ModerateImageRequest, deadline: Deadline, priority: Priority
    ) -> Outcome:
        """An asynchronous task's work: the path every call takes."""
        return await self._moderate(request, deadline, priority, method="SubmitModeration")

    async def validate_submission(self, request: ModerateImageRequest) -> None:
        """`ValidationError` for a submission ModerateImage would refuse (an image URL is downloaded,
        and checked, only when the task runs)."""
        route = self._router.route_for(request.biz_type)
        # An image the route's backends need fitted is checked by fitting, not validation.
        fitted = self._fitting is not None and self._fitting.checked(request, route)
        validate(request, route.image_limits, image_checked=fitted)

    def begin_drain(self) -> None:
        self._draining.set()

    async def aclose(self) -> None:
        if self._cache is not None:
            await self._cache.aclose()
        if self._fitting is not None:
            await self._fitting.aclose()

    async def _admit(self, context: grpc.aio.ServicerContext[object, object], method: str) -> Ticket:
        """The call's room in the server and in its caller's bulkhead, or RESOURCE_EXHAUSTED."""
        ticket = self._admission.admit(method, caller_key(context))
        if not isinstance(ticket, Ticket):
            await _abort(context, ticket)
        return ticket

    async def ModerateImage(
        self,
        request: ModerateImageRequest,
        context: grpc.aio.ServicerContext[ModerateImageRequest, ModerateImageResponse],
    ) -> ModerateImageResponse:
        started = asyncio.get_running_loop().time()
        with await self._admit(context, "ModerateImage") as ticket:
            deadline = Deadline.for_call(context.time_remaining(), cap=self._backend_timeout)
            room = self._intake.slot(ticket.key, Priority.INTERACTIVE)
            outcome = await self._moderate(
                request, deadline, Priority.INTERACTIVE, method="ModerateImage", room=room
            )
        self._observer.unary_call(
            "ModerateImage", request, outcome, asyncio.get_running_loop().time() - started
        )
        if not isinstance(outcome, ModerateImageResponse):
            await _abort(context, errors.failure_status(outcome, self._telemetry.outward))
        return outcome

    async def StreamModerateImages(
        self,
        request_iterator: AsyncIterator[StreamModerateImagesRequest],
        context: grpc.aio.ServicerContext[StreamModerateImagesRequest, StreamModerateImagesResponse],
    ) -> AsyncIterator[StreamModerateImagesResponse]:
        with await self._admit(context, "StreamModerateImages") as ticket:
            items = _stream_items(request_iterator)
            async for answer in self._answers(StreamModerateImagesResponse, items, context, ticket):
                yield answer

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
            await _abort(
                context, errors.failure_status(ValidationError([violation]), self._telemetry.outward)
            )
        with await self._admit(context, "BatchModerateImages") as ticket:
            items = [
                Item(index, entry.correlation_id, entry.request) for index, entry in enumerate(request.items)
            ]
            batch = aiter_items(items)
            async for answer in self._answers(BatchModerateImagesResponse, batch, context, ticket):
                yield answer

    async def _answers(
        self,
        message_type: type[ItemAnswer],
        items: AsyncIterator[Item],
        context: grpc.aio.ServicerContext[object, object],
        ticket: Ticket,
    ) -> AsyncIterator[ItemAnswer]:
        """Both streaming RPCs: an answer per item read, one access line, a clear end if reading stops."""
        method = (
            "StreamModerateImages" if message_type is StreamModerateImagesResponse else "BatchModerateImages"
        )
        with self._observer.stream_call(method) as tally:
            try:
                async for item, outcome in self._answer_items(items, context, method, ticket):
                    tally(outcome)
                    yield _item_answer(message_type, item, outcome, self._telemetry.outward)
            except ReadingStopped as stopped:
                idle = self._stream_idle_timeout
                status = errors.stream_stopped_status(stopped.reason, stopped.items_read, idle)
                tally.ended_with(status)
                await _abort(context, status)

    def _answer_items(
        self,
        items: AsyncIterator[Item],
        context: grpc.aio.ServicerContext[object, object],
        method: str,
        ticket: Ticket,
    ) -> AsyncIterator[tuple[Item, Outcome]]:
        # Each item gets a span of its own trace, linked to the stream's: a long stream must not grow
        # one trace without bound.
        stream = trace.get_current_span().get_span_context()
        links = [trace.Link(stream)] if stream.is_valid else []

        async def answer(item: Item) -> Outcome:
            deadline = Deadline.for_call(
                context.time_remaining(),
                cap=self._backend_timeout,
                margin=STREAM_ITEM_MARGIN,
                received_at=item.received_at,
            )
            with self._tracer.start_as_current_span(
                "moderation.item", context=otel_context.Context(), links=links
            ) as span:
                if span.is_recording():
                    span.set_attribute("moderation.item.index", item.index)
                    span.set_attribute("moderation.correlation_id", item.correlation_id)
                return await self._moderate(item.request, deadline, Priority.BATCH, method=method)

        return answer_concurrently(
            items,
            answer,
            window=self._stream_window,
            server_slots=self._server_slots,
            caller_slots=ticket.items,
            intake=self._intake.slot(ticket.key),
            stop_reading=self._draining,
            idle_timeout=self._stream_idle_timeout,
        )

    async def GetUsage(
        self, request: GetUsageRequest, context: grpc.aio.ServicerContext[GetUsageRequest, GetUsageResponse]
    ) -> GetUsageResponse:
        return await self._usage.get_usage(request, context)

    async def SubmitModeration(
        self,
        request: SubmitModerationRequest,
        context: grpc.aio.ServicerContext[SubmitModerationRequest, SubmitModerationResponse],
    ) -> SubmitModerationResponse:
        tasks = await self._task_rpc(context)
        # In the server's and its caller's bulkheads like any call: a burst of submissions is one caller's.
        with await self._admit(context, "SubmitModeration"):
            return await tasks.submit(request, context)

    async def GetModerationTask(
        self,
        request: GetModerationTaskRequest,
        context: grpc.aio.ServicerContext[GetModerationTaskRequest, ModerationTask],
    ) -> ModerationTask:
        return await (await self._task_rpc(context)).get(request, context)

    async def _task_rpc(self, context: grpc.aio.ServicerContext[Any, Any]) -> TaskRpc:
        if self._tasks is None:  # a servicer built without `build_server`
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this server does not run asynchronous tasks")
            raise AssertionError("grpc's context.abort() always raises")
        return self._tasks

    async def _moderate(
        self,
        request: ModerateImageRequest,
        deadline: Deadline,
        priority: Priority,
        *,
        method: str,
        room: IntakeSlot | None = None,
    ) -> Outcome:
        """The result, or the failure explaining why there is none. Never raises (but for cancellation).
        `room`: the intake's, taken before a backend is called (a unary call's; an item holds its own)."""
        # The call's route, decided here once and carried down to fitting, the cache and the router.
        route = self._router.route_for(request.biz_type)
        # Hashed at most once, by the first of the policy's image lists and the verdict cache to need it.
        image = ImageHash.of(request)
        outcome = functools.partial(self._outcome, request, route, image, deadline, priority, room)
        policy = self._policy
        decided = (
            policy.answer(request, image, route.image_limits, outcome) if policy is not None else outcome()
        )
        return await self._observer.image(method, request, priority, decided)

    async def _outcome(
        self,
        request: ModerateImageRequest,
        route: Route,
        image: ImageHash,
        deadline: Deadline,
        priority: Priority,
        room: IntakeSlot | None,
    ) -> Outcome:
        try:
            fitting, cache = self._fitting, self._cache
            # The image's header is read once per call: the fit found here is carried to fitting's call.
            fit: Fit | None = None
            if fitting is not None:
                # A URL image the route has the gateway fetch becomes content here, so the cache keys the
                # picture, not the address.
                prepared = await fitting.fetched(request, route, deadline)
                if prepared.request is not request:
                    request, image = prepared.request, ImageHash.of(prepared.request)
                fit = prepared.fit
            found = None
            if cache is not None:
                # Invalid fields are refused before the image is hashed; the image itself is checked
                # after the cache is asked: a hit's image passed when its verdict was cached.
                validate_fields(request, route.image_limits)
                found = await cache.look_up(request, route, image)
                if found.hit is not None and (fitting is None or fitting.fits_as_cached(request, route)):
                    return found.hit
            if fitting is not None and fit is None:
                # An image the backend's limits need fitted is checked by fitting, not validation.
                fit = fitting.fit(request, route)
            _validate_traced(
                request, route.image_limits, image_checked=fit is not None, fields_checked=cache is not None
            )
            if found is not None and found.hit is not None:
                return found.hit
            send = (
                functools.partial(fitting.moderate, request, route, deadline, priority, fit)
                if fitting is not None
                else functools.partial(self._router.moderate, request, route, deadline, priority)
            )
            routed = functools.partial(self._routed, send, route, deadline, room)
            if cache is None or found is None:
                return await routed()
            return await cache.moderate(found, request, deadline, routed)
        except (ValidationError, errors.CallFailure) as failure:
            return failure
        except Exception as error:
            return errors.InternalFailure(error)

    async def _routed(
        self,
        send: Callable[[], Awaitable[ModerateImageResponse]],
        route: Route,
        deadline: Deadline,
        room: IntakeSlot | None,
    ) -> Outcome:
        """`send`'s answer (fitting's or the router's), or the failure explaining why there is none (the
        cache shares outcomes)."""
        if room is None:
            return await _answer(send)
        # The call waits for the intake's room no longer than leaves it the time its backend takes.
        upstream = route.chain[0]
        loop = asyncio.get_running_loop()
        started = loop.time()
        if not await room.acquire_within(deadline.remaining() - upstream.retrier.time_to_finish):
            refused = upstream.retrier.not_sent(loop.time() - started, deadline.remaining(), None, first=True)
            return errors.CallFailure(refused, backend=upstream.name, attempts=0)
        try:
            return await _answer(send)
        finally:
            room.release()


async def _answer(send: Callable[[], Awaitable[ModerateImageResponse]]) -> Outcome:
    try:
        return await send()
    except errors.CallFailure as failure:
        return failure
    except Exception as error:
        return errors.InternalFailure(error)


def _validate_traced(
    request: ModerateImageRequest, limits: ImageLimits, *, image_checked: bool, fields_checked: bool
) -> None:
    """`validate`, timed as an event on the call's span when it is sampled."""
    span = trace.get_current_span()
    if not span.is_recording():
        validate(request, limits, image_checked=image_checked, fields_checked=fields_checked)
        return
    started = time.perf_counter()
    try:
        validate(request, limits, image_checked=image_checked, fields_checked=fields_checked)
    finally:
        span.add_event("moderation.validate", {"moderation.duration_s": time.perf_counter() - started})


async def _stream_items(requests: AsyncIterator[StreamModerateImagesRequest]) -> AsyncIterator[Item]:
    index = 0
    async for message in requests:
        yield Item(index, message.correlation_id, message.request)
        index += 1


def _item_answer(
    message_type: type[ItemAnswer], item: Item, outcome: Outcome, outward: Scrubber
) -> ItemAnswer:
    answer = message_type(index=item.index, correlation_id=item.correlation_id)
    if isinstance(outcome, ModerateImageResponse):
        answer.result.CopyFrom(outcome)
    else:
        answer.error.CopyFrom(errors.failure_status(outcome, outward))
    return answer


async def _abort(context: grpc.aio.ServicerContext[object, object], status: status_pb2.Status) -> NoReturn:
    """Ends the call with the status and its details (as the grpc-status-details-bin trailer)."""
    rich = rpc_status.to_status(status)
    await context.abort(rich.code, rich.details, rich.trailing_metadata)
    raise AssertionError("grpc's context.abort() always raises")
