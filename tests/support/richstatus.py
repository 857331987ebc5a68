"""Reads the google.rpc details a gateway error carries, as any gRPC client would."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass
class RichError:
    code: grpc.StatusCode
    message: str
    error_infos: list[error_details_pb2.ErrorInfo] = field(default_factory=list)
    bad_request: error_details_pb2.BadRequest | None = None
    retry_info: error_details_pb2.RetryInfo | None = None
    quota_failure: error_details_pb2.QuotaFailure | None = None

    @property
    def info(self) -> error_details_pb2.ErrorInfo:
        assert len(self.error_infos) == 1, "every error carries exactly one ErrorInfo"
        return self.error_infos[0]


def rich_error(error: grpc.aio.AioRpcError) -> RichError:
    status = rpc_status.from_call(error)
    assert status is not None, f"{error.code()} carries no google.rpc.Status details"
    result = RichError(error.code(), status.message)
    for detail in status.details:
        for kind, attribute in (
            (error_details_pb2.BadRequest, "bad_request"),
            (error_details_pb2.RetryInfo, "retry_info"),
            (error_details_pb2.QuotaFailure, "quota_failure"),
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                setattr(result, attribute, message)
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            result.error_infos.append(info)
    return result
