"""What a failed call told the client, labelled like a per-item error and scanned for secrets."""

from __future__ import annotations

import grpc
from google.rpc import status_pb2

from bench.soak.leaks import ANSWERS, SecretScan
from testbed.client import error_label

_DETAILS_KEY = "grpc-status-details-bin"


def call_error_label(error: grpc.aio.AioRpcError) -> str:
    """`CODE/REASON` from the rich status in the trailers, or `CODE/-` when there is none (a status
    made by gRPC itself, such as the client's own deadline)."""
    for key, value in error.trailing_metadata() or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            return error_label(status_pb2.Status.FromString(value))
    return f"{error.code().name}/-"


def scan_call_error(scan: SecretScan, error: grpc.aio.AioRpcError) -> None:
    """Everything the client could show or log of the error: message, debug string, trailers (raw:
    the rich status in them is binary protobuf, whose strings are stored verbatim)."""
    data = [str(error.details() or "").encode(), str(error.debug_error_string() or "").encode()]
    for key, value in error.trailing_metadata() or ():
        data += [key.encode(), value if isinstance(value, bytes) else str(value).encode()]
    scan.scan(ANSWERS, b"\n".join(data))
