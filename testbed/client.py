"""The gRPC contract from a client's side, for tests and benchmarks: channels, requests, and naming a
per-item error."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2
from moderation.v1 import moderation_service_pb2_grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest

# The 5 MB images of the memory phase are over gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
# The reason a per-item RESOURCE_EXHAUSTED carries when IMS answered RequestLimitExceeded every time.
RATE_LIMITED = "RESOURCE_EXHAUSTED/BACKEND_RATE_LIMITED"
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
# What goes with a call: `bearer(token)` for an authenticated caller.
Metadata = tuple[tuple[str, str], ...]


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def open_channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        address,
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ],
    )


def stub(channel: grpc.aio.Channel) -> moderation_service_pb2_grpc.ModerationServiceStub:
    return moderation_service_pb2_grpc.ModerationServiceStub(channel)


def request(image: bytes, data_id: str) -> ModerateImageRequest:
    return ModerateImageRequest(content=image, data_id=data_id)


def error_label(status: status_pb2.Status) -> str:
    """`CODE/REASON`, the reason from the status's ErrorInfo (every gateway error carries one)."""
    code = CODE_NAMES.get(status.code, str(status.code))
    info = error_details_pb2.ErrorInfo()
    reason = next((info.reason for d in status.details if d.Unpack(info)), "?")
    return f"{code}/{reason}"
