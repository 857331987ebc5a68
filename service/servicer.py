"""The RPC handlers: convert, validate, delegate, map errors. Nothing else lives here."""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse

from backends.base import Backend
from backends.errors import BackendError
from service import errors
from service.deadlines import Deadline
from service.retry import Retrier, RetryPolicy
from service.validation import ValidationError, validate

log = logging.getLogger(__name__)


class ModerationServicer(moderation_service_pb2_grpc.ModerationServiceServicer):
    def __init__(self, backend: Backend, policy: RetryPolicy, *, backend_timeout: float) -> None:
        self._backend = backend
        self._retrier = Retrier(backend, policy)
        self._backend_timeout = backend_timeout

    async def ModerateImage(
        self,
        request: ModerateImageRequest,
        context: grpc.aio.ServicerContext[ModerateImageRequest, ModerateImageResponse],
    ) -> ModerateImageResponse:
        deadline = Deadline.for_call(context.time_remaining(), cap=self._backend_timeout)
        try:
            validate(request)
            return await self._retrier.moderate(request, deadline)
        except ValidationError as error:
            status = errors.validation_status(error)
        except BackendError as error:
            log.warning(
                "backend %s failed after %d attempt(s): %s (upstream code %r, request id %r)",
                self._backend.name,
                error.attempts,
                error.message,
                error.upstream_code,
                error.request_id,
            )
            status = errors.backend_status(error, self._backend.name)
        except Exception:
            log.exception("unexpected error in ModerateImage")
            status = errors.internal_status()
        return await _abort(context, status)


async def _abort(context: grpc.aio.ServicerContext[object, object], status: status_pb2.Status) -> NoReturn:
    """Ends the call with the status and its details (as the grpc-status-details-bin trailer)."""
    rich = rpc_status.to_status(status)
    await context.abort(rich.code, rich.details, rich.trailing_metadata)
    raise AssertionError("grpc's context.abort() always raises")
