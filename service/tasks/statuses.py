"""The statuses only tasks give, each with its ErrorInfo (the others come from `service.errors`)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from service import errors

__all__ = ["deadline_passed", "expired", "not_found", "store_unavailable"]


def _status(code: grpc.StatusCode, message: str, reason: str) -> status_pb2.Status:
    packed = any_pb2.Any()
    packed.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=errors.DOMAIN))
    return status_pb2.Status(code=code.value[0], message=message, details=[packed])


def deadline_passed() -> status_pb2.Status:
    """A task whose deadline passed before the backend's budget had a slot for it."""
    return _status(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "the task's deadline (MODERATION_TASK_DEADLINE) passed before the backend's budget had a slot for it",
        "TASK_DEADLINE_EXCEEDED",
    )


def expired(retention: float) -> status_pb2.Status:
    return _status(
        grpc.StatusCode.NOT_FOUND,
        f"the task has expired: tasks are kept for {retention:g} s after their outcome "
        "(MODERATION_TASK_RETENTION)",
        "TASK_EXPIRED",
    )


def not_found() -> status_pb2.Status:
    return _status(grpc.StatusCode.NOT_FOUND, "no such task", "TASK_NOT_FOUND")


def store_unavailable() -> status_pb2.Status:
    return _status(
        grpc.StatusCode.UNAVAILABLE, "the task store cannot be reached; retry later", "TASK_STORE_UNAVAILABLE"
    )
